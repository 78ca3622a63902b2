"""Build what a plan trains: the model's pipeline layers, the DeepSpeed module, the engine, synthetic data.

Two engine paths (``RunPlan.engine``): ``pipeline`` — a ``PipelineModule`` (also for pp == 1, so plans with and
without pipelining run the same PipelineEngine) — and ``plain`` for pp == 1 with ZeRO 2/3, which the pipeline
engine refuses (deepspeed/runtime/pipe/engine.py asserts ZeRO stage < 2).

tp > 1 builds the tensor-parallel layers (``tp_blocks``) and the vocabulary-parallel loss (``tp_loss``) on
DeepSpeed's pipe x data x model topology (``topology.py``); their tp group is the grid's slice group, bound
once the module (or, for the plain engine, the grid passed as ``mpu``) exists.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pptune.errors import ConfigError
from pptune.runtime.plan_files import EXPLICIT, RunPlan
from pptune.runtime.tp_comm import TensorParallel

LOG_NEVER = 2**31 - 1  # steps_per_print beyond any run, so the engine never reads and resets its timers itself
DATA_SEED = 1234
DATA_BATCHES = 8  # distinct synthetic batches, cycled (generating tokens is not what we time)


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelParts:
    """The layer list for DeepSpeed, the loss, and the token range the first layer accepts."""

    layers: list[Any]  # LayerSpecs (each stage builds only its own) or built nn.Modules
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    vocab_size: int


def model_parts(plan: RunPlan, *, built: bool = False, tp: TensorParallel | None = None) -> ModelParts:
    """The plan's model as pipeline layers (LayerSpecs for pptune specs unless ``built``) and its loss.

    With ``tp`` (tp > 1: ``topology.check_tensor_parallel`` accepted the plan) the layers and the loss are the
    tensor-parallel ones of this rank.

    Raises:
        ConfigError: unknown model, or a sequence longer than the model's learned position table.
    """
    from pptune.model.layers import build_layer_specs, build_layers, pipeline_loss
    from pptune.model.resolve import load_model_layers
    from pptune.model.spec import TransformerSpec, resolve_spec

    spec = None
    if isinstance(plan.model, dict):
        spec = TransformerSpec.from_dict(plan.model)
    elif not plan.model.startswith("hf:"):
        try:
            spec = resolve_spec(plan.model)
        except ConfigError:
            spec = None  # not a preset or spec string: a user factory, resolved below
    if spec is None:
        loaded = load_model_layers(plan.model, plan.seq_len)
        return ModelParts(layers=list(loaded.layers), loss_fn=loaded.loss_fn or pipeline_loss,
                          vocab_size=loaded.vocab_size)
    if spec.position == "learned" and plan.seq_len > spec.seq_len:
        raise ConfigError(f"model {spec.name!r}: seq_len {plan.seq_len} is longer than its {spec.seq_len} learned positions")
    if tp is not None:
        from pptune.runtime.tp_blocks import build_tp_layer_specs, build_tp_layers
        from pptune.runtime.tp_loss import VocabParallelLoss

        layers = build_tp_layers(spec, tp) if built else build_tp_layer_specs(spec, tp)
        return ModelParts(layers=list(layers), loss_fn=VocabParallelLoss(tp, spec.vocab_size), vocab_size=spec.vocab_size)
    layers = build_layers(spec) if built else build_layer_specs(spec)
    return ModelParts(layers=list(layers), loss_fn=pipeline_loss, vocab_size=spec.vocab_size)


class PlainModel(nn.Module):
    """All layers in one module whose forward returns the loss (for DeepSpeed's plain engine, pp == 1).

    ``mpu``: the grid passed to ``deepspeed.initialize`` at tp > 1 (None otherwise).
    """

    def __init__(self, layers: list[nn.Module], loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
                 mpu: Any = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.loss_fn = loss_fn
        self.mpu = mpu

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = input_ids
        for layer in self.layers:
            x = layer(x)
        return self.loss_fn(x, labels)


def layer_class_name(layer: Any) -> str:
    """The class name DeepSpeed's ``PipelineModule`` compares with ``checkpointable_layers`` for this layer."""
    typename = getattr(layer, "typename", None)  # LayerSpec / TiedLayerSpec
    return (typename if isinstance(typename, type) else type(layer)).__name__


def checkpointable_layers(layers: list[Any]) -> list[str]:
    """Layer classes DeepSpeed may recompute: every class but the first layer's (the one fed token ids).

    DeepSpeed's default recomputes any chunk with parameters, the embedding included; its checkpoint function then
    runs the embedding under no_grad on integer inputs that do not require grad, so stage 0's output does not either
    and backward fails ("element 0 of tensors does not require grad"). Megatron recomputes transformer layers only;
    this keeps DeepSpeed to the same.
    """
    first = layer_class_name(layers[0]) if layers else None
    return sorted({layer_class_name(layer) for layer in layers} - {first})


def build_module(plan: RunPlan) -> tuple[nn.Module, int]:
    """The DeepSpeed module of the plan and the model's vocabulary size (collective: every rank calls it).

    Raises:
        ConfigError: a tp > 1 plan the tensor-parallel layers cannot run (``topology.check_tensor_parallel``).
    """
    from pptune.runtime.topology import check_tensor_parallel, plain_grid, plan_topology, tensor_parallel_for

    check_tensor_parallel(plan)
    topology = plan_topology(plan)
    tp = tensor_parallel_for(plan, topology) if plan.tp > 1 else None
    if plan.engine == "plain":
        grid = plain_grid(topology) if tp is not None else None
        if tp is not None:
            tp.bind(grid.get_slice_parallel_group())
        parts = model_parts(plan, built=True, tp=tp)
        return PlainModel(parts.layers, parts.loss_fn, mpu=grid), parts.vocab_size
    from deepspeed.pipe import PipelineModule

    from pptune.runtime.pipeline import ExplicitPipelineModule

    parts = model_parts(plan, tp=tp)
    common = {"topology": topology, "loss_fn": parts.loss_fn,
              "activation_checkpoint_interval": plan.activation_checkpoint_interval,
              "checkpointable_layers": checkpointable_layers(parts.layers)}
    if plan.partition_method == EXPLICIT:
        assert plan.boundaries is not None  # load_run_plan checks this
        module: nn.Module = ExplicitPipelineModule(parts.layers, boundaries=plan.boundaries, **common)
    else:
        module = PipelineModule(parts.layers, partition_method=plan.partition_method, **common)
    if tp is not None:  # the layers first reach their group in forward, after this
        tp.bind(module._grid.get_slice_parallel_group())
    return module, parts.vocab_size


def run_config(plan: RunPlan, *, ds_timers: bool) -> dict[str, Any]:
    """The plan's ds_config for the run: DeepSpeed's timers on when asked, no periodic timer log (see timers.py)."""
    cfg = copy.deepcopy(plan.ds_config)
    if ds_timers:
        cfg["wall_clock_breakdown"] = True
    cfg["steps_per_print"] = LOG_NEVER
    return cfg


def initialize(plan: RunPlan, module: nn.Module, *, ds_timers: bool) -> Any:
    """``deepspeed.initialize`` the module with the plan's config; returns the engine."""
    import deepspeed

    params = [p for p in module.parameters() if p.requires_grad]
    mpu = module.mpu if isinstance(module, PlainModel) else None  # a PipelineModule brings its own grid
    engine, _, _, _ = deepspeed.initialize(model=module, config=run_config(plan, ds_timers=ds_timers),
                                           model_parameters=params, mpu=mpu)
    return engine


def data_parallel_rank(engine: Any) -> int:
    """This rank's data-parallel replica: tp ranks of a replica must read the same tokens."""
    import torch.distributed as dist

    mpu = getattr(engine, "mpu", None)
    return int(mpu.get_data_parallel_rank()) if mpu is not None else dist.get_rank()


def synthetic_batches(*, vocab_size: int, micro_batch_size: int, seq_len: int, seed: int = DATA_SEED
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(input_ids, labels)`` micro-batches of random tokens, labels shifted by one (``pipeline_loss``)."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(DATA_BATCHES):
        tokens = torch.randint(0, vocab_size, (micro_batch_size, seq_len + 1), generator=gen, dtype=torch.int64)
        batches.append((tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()))
    return itertools.cycle(batches)


def train_step(engine: Any, plan: RunPlan, data: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """One optimizer step: ``gradient_accumulation_steps`` micro-batches; returns the step's loss."""
    if plan.engine == "pipeline":
        return engine.train_batch(data_iter=data)
    losses = []
    for _ in range(plan.num_microbatches):
        input_ids, labels = next(data)
        loss = engine(input_ids.to(engine.device), labels.to(engine.device))
        engine.backward(loss)
        engine.step()  # an optimizer step only at the accumulation boundary (DeepSpeedEngine.step)
        losses.append(loss.detach().float())
    return torch.stack(losses).mean()
