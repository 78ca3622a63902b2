"""Build what a plan trains: the model's pipeline layers, the DeepSpeed module, the engine, synthetic data.

Two engine paths (``RunPlan.engine``): ``pipeline`` — a ``PipelineModule`` (also for pp == 1, so plans with and
without pipelining run the same PipelineEngine) — and ``plain`` for pp == 1 with ZeRO 2/3, which the pipeline
engine refuses (deepspeed/runtime/pipe/engine.py asserts ZeRO stage < 2).
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

LOG_NEVER = 2**31 - 1  # steps_per_print beyond any run, so the engine never reads and resets its timers itself
DATA_SEED = 1234
DATA_BATCHES = 8  # distinct synthetic batches, cycled (generating tokens is not what we time)


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelParts:
    """The layer list for DeepSpeed, the loss, and the token range the first layer accepts."""

    layers: list[Any]  # LayerSpecs (each stage builds only its own) or built nn.Modules
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    vocab_size: int


def model_parts(plan: RunPlan, *, built: bool = False) -> ModelParts:
    """The plan's model as pipeline layers (LayerSpecs for pptune specs unless ``built``) and its loss.

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
    layers = build_layers(spec) if built else build_layer_specs(spec)
    return ModelParts(layers=list(layers), loss_fn=pipeline_loss, vocab_size=spec.vocab_size)


class PlainModel(nn.Module):
    """All layers in one module whose forward returns the loss (for DeepSpeed's plain engine, pp == 1)."""

    def __init__(self, layers: list[nn.Module], loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.loss_fn = loss_fn

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
    """The DeepSpeed module of the plan and the model's vocabulary size."""
    if plan.tp > 1:
        raise ConfigError(f"tp {plan.tp} > 1: pptune's runtime layers are not tensor-parallel; measure tp = 1 plans")
    if plan.engine == "plain":
        parts = model_parts(plan, built=True)
        return PlainModel(parts.layers, parts.loss_fn), parts.vocab_size
    from deepspeed.pipe import PipelineModule
    from deepspeed.runtime.pipe.topology import PipeDataParallelTopology

    from pptune.runtime.pipeline import ExplicitPipelineModule

    parts = model_parts(plan)
    topology = PipeDataParallelTopology(num_pp=plan.pp, num_dp=plan.dp)
    common = {"topology": topology, "loss_fn": parts.loss_fn,
              "activation_checkpoint_interval": plan.activation_checkpoint_interval,
              "checkpointable_layers": checkpointable_layers(parts.layers)}
    if plan.partition_method == EXPLICIT:
        assert plan.boundaries is not None  # load_run_plan checks this
        module: nn.Module = ExplicitPipelineModule(parts.layers, boundaries=plan.boundaries, **common)
    else:
        module = PipelineModule(parts.layers, partition_method=plan.partition_method, **common)
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
    engine, _, _, _ = deepspeed.initialize(model=module, config=run_config(plan, ds_timers=ds_timers), model_parameters=params)
    return engine


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
