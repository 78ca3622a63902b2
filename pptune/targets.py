"""One table of target rules: what each framework runs (checked against it in ``pptune.target_checks``).

A *target* is the framework a plan is made for (``ParallelConfig.target``): ``deepspeed`` or ``megatron``.
``rules_for(target, pp)`` gives its :class:`TargetRules`; DeepSpeed is two engines, the pipeline engine
(``deepspeed.runtime.pipe.engine.PipelineEngine``, pp > 1) and the plain engine (pp == 1, where ZeRO 2/3 run).
The cost model reads the behaviour fields (sends, gradient bytes, optimizer, gradient overlap); ParallelConfig,
``pptune.cost.checks``, the schedule simulator, the search space and the emitters read the validity fields
through ``pptune.target_checks.violations``, so that every rule has one wording and one place.
Pure Python: no torch or numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pptune.errors import ConfigError

TARGETS: tuple[str, ...] = ("deepspeed", "megatron")  # ParallelConfig.target and the CLI's --target choices
SCHEDULES: tuple[str, ...] = ("gpipe", "1f1b", "interleaved_1f1b", "zb_h1")
RECOMPUTE_MODES: tuple[str, ...] = ("none", "selective", "full", "every")  # "every" = every:K
RECOMPUTE_OWNER = {"selective": "Megatron"}  # the framework a recompute mode comes from, for the message


@dataclass(frozen=True, kw_only=True, slots=True)
class TargetRules:
    """What one target runs (validity) and how it runs it (the cost model's behaviour switches)."""

    name: str  # "deepspeed-pipe", "deepspeed" (no pipeline) or "megatron"
    description: str
    engine: str  # how rule messages name it, e.g. "DeepSpeed's pipeline engine"
    # Schedules ParallelConfig accepts with pp > 1. DeepSpeed: only TrainSchedule (1F1B), runtime/pipe/schedule.py.
    # Megatron: every schedule pptune simulates; gpipe and zb_h1 are what-ifs (mainline Megatron-LM has neither).
    pipeline_schedules: tuple[str, ...]
    # Schedules pptune plans and emits by default (Megatron: forward_backward_pipelining_without_interleaving
    # and ..._with_interleaving, megatron/core/pipeline_parallel/schedules.py).
    planned_schedules: tuple[str, ...]
    # Schedules planned only on request (``--zero-bubble``): zb_h1 lives in the zero-bubble fork (Qi et al.).
    what_if_schedules: tuple[str, ...]
    # Largest ZeRO stage ParallelConfig accepts with pp > 1: DeepSpeed's PipelineEngine asserts
    # ``zero_optimization_stage() < 2`` (runtime/pipe/engine.py); Megatron is estimated up to 3 as a what-if.
    # The plain DeepSpeed engine (pp == 1) runs every stage.
    max_zero_stage_with_pp: int
    # Largest ZeRO stage pptune plans and emits: Megatron's distributed optimizer (``--use-distributed-optimizer``)
    # shards the optimizer states only, i.e. ZeRO-1.
    planned_max_zero_stage: int
    # Recompute modes ("every" = every:K): DeepSpeed checkpoints whole layers (``activation_checkpoint_interval``);
    # Megatron also has ``--recompute-granularity selective`` (attention core only, Korthikanti et al.).
    recompute_modes: tuple[str, ...]
    sequence_parallel: bool  # Megatron's --sequence-parallel (planned only for Megatron; needs tp > 1)
    # Interleaving's smallest pp when planned: Megatron's arguments.py needs pp > 2 without p2p overlap.
    interleaved_min_pp: int
    # Whether the even split (``type:<block>``, Megatron's default) needs the blocks divisible by pp
    # (Megatron: otherwise first/last stage sizes or a layout); DeepSpeed's ``type:`` method splits unevenly.
    even_split_needs_divisible_blocks: bool
    # Partition methods pptune emits ("type:" = type:<block class>): DeepSpeed's PipelineModule methods plus
    # explicit boundaries; Megatron's even split or first/last stage sizes / a layout (``balanced``).
    partition_methods: tuple[str, ...]
    # Pipeline sends block the sender until the transfer is done: deepspeed.runtime.pipe.p2p send/recv are
    # synchronous torch.distributed calls; Megatron's p2p_communication posts isend/irecv and overlaps them.
    blocking_sends: bool
    # With tp > 1 each pipeline message is split over the tp ranks and all-gathered by the receiver
    # (DeepSpeed's ``pipe_partitioned`` / ``grad_partitioned``, runtime/pipe/engine.py).
    partitioned_sends: bool
    # The engine holds each in-flight micro-batch's stage output until its backward (DeepSpeed's pipe engine;
    # with tp > 1 its 1/tp part, since pipe_partitioned replaces the tensor's data by the partition).
    keeps_stage_output: bool
    # Gradient bytes per parameter before ZeRO, per training dtype (pptune.cost.memory.bytes_per_param):
    # fp32 4; DeepSpeed fp16 2 (FP16_Optimizer makes fp32 copies only inside the step), bf16 2 + 4
    # (BF16_Optimizer's bf16 .grad plus its fp32 accumulation buffer); Megatron 4 (fp32 main_grad buffer).
    grad_bytes_per_param: Mapping[str, float] = field(hash=False)
    # Largest ZeRO stage at which DeepSpeed runs its BF16_Optimizer for bf16 (engine _do_optimizer_sanity_check;
    # it partitions the fp32 master and Adam states over dp even at ZeRO 0); -1: never (Megatron).
    bf16_optimizer_max_zero: int
    # Gradient reduction overlapped with the backward: Megatron's --overlap-grad-reduce exposes only the last
    # bucket (the stage's first layer); DeepSpeed reduces the whole stage gradient after the schedule
    # (pptune.cost.dp_sync). The default of ParallelConfig.overlap_grad_reduce, and whether it may be true.
    overlap_grad_reduce: bool

    def grad_bytes(self, dtype: str) -> float:
        return self.grad_bytes_per_param[dtype]


_DEEPSPEED_COMMON: dict[str, Any] = dict(
    pipeline_schedules=("1f1b",), planned_schedules=("1f1b",), what_if_schedules=(),
    recompute_modes=("none", "full", "every"), sequence_parallel=False, interleaved_min_pp=2,
    even_split_needs_divisible_blocks=False, partition_methods=("parameters", "uniform", "type:", "balanced"),
    blocking_sends=True, partitioned_sends=True, keeps_stage_output=True,
    grad_bytes_per_param=MappingProxyType({"fp32": 4.0, "bf16": 6.0, "fp16": 2.0}),
    bf16_optimizer_max_zero=1, overlap_grad_reduce=False,
)
DEEPSPEED_PIPE = TargetRules(
    name="deepspeed-pipe", description="DeepSpeed's PipelineEngine (deepspeed.pipe, pp > 1)",
    engine="DeepSpeed's pipeline engine", max_zero_stage_with_pp=1, planned_max_zero_stage=1, **_DEEPSPEED_COMMON,
)
DEEPSPEED_PLAIN = TargetRules(
    name="deepspeed", description="DeepSpeed's engine without a pipeline (pp == 1; ZeRO 0 to 3)",
    engine="DeepSpeed's engine", max_zero_stage_with_pp=3, planned_max_zero_stage=3, **_DEEPSPEED_COMMON,
)
MEGATRON = TargetRules(
    name="megatron", description="Megatron-LM (megatron.core pipeline schedules, distributed optimizer = ZeRO-1)",
    engine="Megatron-LM", pipeline_schedules=SCHEDULES, planned_schedules=("1f1b", "interleaved_1f1b"),
    what_if_schedules=("zb_h1",), max_zero_stage_with_pp=3, planned_max_zero_stage=1,
    recompute_modes=RECOMPUTE_MODES, sequence_parallel=True, interleaved_min_pp=3,
    even_split_needs_divisible_blocks=True, partition_methods=("type:", "balanced"),
    blocking_sends=False, partitioned_sends=False, keeps_stage_output=False,
    grad_bytes_per_param=MappingProxyType({"fp32": 4.0, "bf16": 4.0, "fp16": 4.0}),
    bf16_optimizer_max_zero=-1, overlap_grad_reduce=True,
)


def either(items: tuple[str, ...]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return " or ".join(filter(None, (", ".join(items[:-1]), items[-1])))


def target_rule(target: str) -> str | None:
    if target not in TARGETS:
        return f"target must be {either(TARGETS)}, got {target!r}"
    return None


def rules_for(target: str, pp: int) -> TargetRules:
    """The rules of ``target`` at pipeline depth ``pp`` (DeepSpeed: its pipeline engine when pp > 1)."""
    if target == "deepspeed":
        return DEEPSPEED_PIPE if pp > 1 else DEEPSPEED_PLAIN
    if target == "megatron":
        return MEGATRON
    raise ConfigError(target_rule(target) or f"unknown target {target!r}")
