"""The process layout of a plan on DeepSpeed's own topology, and this rank's tensor-parallel group in it.

tp > 1 uses ``PipeModelDataParallelTopology(num_pp, num_mp, num_dp)`` (axes pipe, data, model: the model axis is
innermost, so a tp group is consecutive ranks, on one node when GPUs per node are a multiple of tp). Given to
``PipelineModule(topology=...)``, it becomes the module's ``PipelineParallelGrid``, whose model dimension turns on
the engine's ``is_model_parallel``, so ``pipe_partitioned`` / ``grad_partitioned`` split the activations and
gradients sent between stages over the slice group and all-gather them on arrival (deepspeed/runtime/pipe/engine.py
``PipelineEngine.__init__``, ``_exec_forward_pass``, ``_exec_send_grads``; deepspeedai/DeepSpeed @e787c16394,
installed 0.19.8). The grid is also the engine's mpu (``deepspeed.initialize`` takes ``model.mpu()`` for a
PipelineModule): data-parallel groups of ``dp`` ranks, the slice group as the tensor-parallel group.

Plain engine (pp 1 with ZeRO 2/3): the same grid, built here, is passed as ``mpu`` to ``deepspeed.initialize``.

A DeepSpeed quirk worth knowing (not changed here): with ZeRO 0 in fp32, ``clip_grad_norm_``
(deepspeed/runtime/utils.py) counts a replicated parameter only where ``mpu.get_model_parallel_rank() == 0``,
and the grid's model-parallel group spans pipe x model, so at pp > 1 the replicated parameters of stages > 0 are
left out of the global norm (at tp = 1 too); ZeRO 1/2 and bf16 use the tensor-parallel rank and count them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pptune.errors import ConfigError
from pptune.model.spec import TransformerSpec
from pptune.runtime.plan_files import RunPlan

if TYPE_CHECKING:  # torch: this module's checks stay importable without it (the CLI checks plans before launching)
    from pptune.runtime.tp_comm import TensorParallel


def tp_problem(spec: TransformerSpec, *, tp: int, seq_len: int, sequence_parallel: bool) -> str | None:
    """Why ``spec`` cannot be split over ``tp`` ranks (Megatron's divisibility rules), or None."""
    if tp == 1:
        return None
    for what, value in (("num_heads", spec.num_heads), ("num_kv_heads", spec.kv_heads),
                        ("ffn_hidden_size", spec.ffn_hidden_size)):
        if value % tp:
            return f"model {spec.name!r}: {what} {value} is not divisible by tp {tp}"
    if spec.vocab_size < tp:
        return f"model {spec.name!r}: vocab_size {spec.vocab_size} is smaller than tp {tp}"
    if sequence_parallel and seq_len % tp:
        return f"sequence parallelism: seq_len {seq_len} is not divisible by tp {tp}"
    return None


def check_tensor_parallel(plan: RunPlan) -> TransformerSpec | None:
    """The plan's spec when tp > 1 can run it; None at tp = 1.

    Raises:
        ConfigError: a model that is not a pptune TransformerSpec (HF or user layers are not split), a shape tp
            does not divide, or sequence parallelism with ``pipe_partitioned`` (DeepSpeed's partitioned sends
            assume the activation is the same on every tp rank; under sequence parallelism each rank holds its
            own part of the sequence, which already splits the sends).
    """
    if plan.tp == 1:
        if plan.sequence_parallel:
            raise ConfigError(f"{plan.plan_dir}: sequence_parallel needs tp > 1")
        return None
    from pptune.model.spec import resolve_spec

    if isinstance(plan.model, dict):
        spec = TransformerSpec.from_dict(plan.model)
    elif plan.model.startswith("hf:"):
        spec = None
    else:
        try:
            spec = resolve_spec(plan.model)
        except ConfigError:
            spec = None
    if spec is None:
        raise ConfigError(f"{plan.plan_dir}: tp {plan.tp} needs a pptune model (preset or spec string); "
                          f"{plan.model_name!r} has no tensor-parallel layers")
    problem = tp_problem(spec, tp=plan.tp, seq_len=plan.seq_len, sequence_parallel=plan.sequence_parallel)
    if problem:
        raise ConfigError(f"{plan.plan_dir}: tp {plan.tp}: {problem}")
    if plan.sequence_parallel and plan.ds_config.get("pipeline", {}).get("pipe_partitioned", False):
        raise ConfigError(f"{plan.plan_dir}: sequence parallelism with pipeline.pipe_partitioned true: DeepSpeed's "
                          "partitioned sends assume replicated activations; set pipe_partitioned and "
                          "grad_partitioned to false in ds_config.json")
    return spec


def plan_topology(plan: RunPlan) -> Any:
    """DeepSpeed's topology of the plan: pipe x data at tp = 1, pipe x data x model otherwise."""
    from deepspeed.runtime.pipe.topology import PipeDataParallelTopology, PipeModelDataParallelTopology

    if plan.tp == 1:
        return PipeDataParallelTopology(num_pp=plan.pp, num_dp=plan.dp)
    return PipeModelDataParallelTopology(num_pp=plan.pp, num_mp=plan.tp, num_dp=plan.dp)


def tensor_parallel_for(plan: RunPlan, topology: Any) -> TensorParallel:
    """This rank's tp handle: its coordinate on the topology's model axis (bound to a group later)."""
    import torch.distributed as dist

    from pptune.runtime.tp_comm import TensorParallel

    return TensorParallel(size=plan.tp, rank=int(topology.get_coord(dist.get_rank()).model),
                          sequence_parallel=plan.sequence_parallel)


def plain_grid(topology: Any) -> Any:
    """A ``PipelineParallelGrid`` for the plain engine: its mpu and its slice group (collective on every rank)."""
    from deepspeed.runtime.pipe.topology import PipelineParallelGrid

    return PipelineParallelGrid(topology=topology)
