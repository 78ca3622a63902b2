"""The cost model's outputs: Breakdown, StageCost, TimelineOp, Estimate (all frozen, units in names)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Op = Literal["F", "B", "W"]  # forward, backward (input grad; whole backward when W is not split off), weight grad


@dataclass(frozen=True, kw_only=True, slots=True)
class TimelineOp:
    """One box of the pipeline timeline (Gantt chart)."""

    stage: int
    chunk: int  # model chunk on this stage (0 unless interleaved)
    microbatch: int
    op: Op
    start_ms: float
    end_ms: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Breakdown:
    """Additive parts of one training step (ms): ``step_ms`` is exactly their sum.

    compute_ms: the critical stage's own forward+backward(+recompute) work for all micro-batches.
    bubble_ms: pipeline idle time on that path (warm-up, cool-down, imbalance waits).
    pp_comm_ms / tp_comm_ms / dp_comm_ms: communication that is not hidden behind compute.
    optimizer_ms: the optimizer step (and ZeRO parameter gather) after the last backward.
    overhead_ms: fixed per-step and per-micro-batch engine overhead (calibrated; 0 when unknown).
    cp_comm_ms: context parallelism's K,V ring not hidden behind attention (0 without context parallelism).
    """

    compute_ms: float
    bubble_ms: float
    pp_comm_ms: float
    tp_comm_ms: float
    dp_comm_ms: float
    optimizer_ms: float
    overhead_ms: float = 0.0
    cp_comm_ms: float = 0.0

    @property
    def step_ms(self) -> float:
        return (self.compute_ms + self.bubble_ms + self.pp_comm_ms + self.tp_comm_ms + self.dp_comm_ms
                + self.optimizer_ms + self.overhead_ms + self.cp_comm_ms)

    def to_dict(self) -> dict[str, float]:
        # dataclasses.asdict deep-copies recursively (slow for thousands of ranking rows); the fields are floats.
        return {name: getattr(self, name) for name in _BREAKDOWN_FIELDS}


_BREAKDOWN_FIELDS = tuple(f.name for f in dataclasses.fields(Breakdown))


@dataclass(frozen=True, kw_only=True, slots=True)
class StageCost:
    """One pipeline stage under a configuration."""

    stage: int
    first_layer: int  # inclusive index into the profile's layers
    last_layer: int  # exclusive (the end of the stage's last chunk when interleaved)
    layer_ranges: tuple[tuple[int, int], ...] = ()  # [first, last) of each chunk on this stage, in chunk order
    fwd_ms: float  # per micro-batch, all chunks of the stage
    bwd_ms: float  # per micro-batch, recompute included
    busy_ms: float  # total busy time in the step
    idle_ms: float
    peak_inflight_microbatches: int
    memory_bytes: int  # predicted peak memory of one GPU of this stage
    memory_parts_bytes: dict[str, int]  # weights, grads, optimizer, activations, reserve, ...


@dataclass(frozen=True, kw_only=True, slots=True)
class Estimate:
    """A prediction for one (profile, cluster, config). Every time is explained by ``breakdown``."""

    step_time_ms: float
    breakdown: Breakdown
    samples_per_s: float
    tokens_per_s: float
    tflops_per_gpu: float  # model FLOPs (no recompute) per second per GPU: 6*N*tokens convention, see README
    mfu: float  # tflops_per_gpu / the GPU's dense peak for the dtype
    bubble_fraction: float  # 1 - sum(stage busy) / (pp * pipeline makespan, i.e. before DP reduction and optimizer)
    peak_memory_bytes: int
    memory_per_stage_bytes: tuple[int, ...]
    feasible: bool
    infeasible_reason: str | None
    stages: tuple[StageCost, ...]
    boundaries: tuple[int, ...]  # pp*vpp+1 layer indices: chunk c holds layers [boundaries[c], boundaries[c+1])
    timeline: tuple[TimelineOp, ...] = ()

    def summary(self) -> EstimateSummary:
        """The figures without per-stage detail and timeline (what bulk evaluation returns)."""
        return EstimateSummary(
            step_time_ms=self.step_time_ms, breakdown=self.breakdown, samples_per_s=self.samples_per_s,
            tokens_per_s=self.tokens_per_s, tflops_per_gpu=self.tflops_per_gpu, mfu=self.mfu,
            bubble_fraction=self.bubble_fraction, peak_memory_bytes=self.peak_memory_bytes,
            memory_per_stage_bytes=self.memory_per_stage_bytes, feasible=self.feasible,
            infeasible_reason=self.infeasible_reason, boundaries=self.boundaries,
        )

    def to_json_dict(self, *, timeline: bool = False) -> dict:
        """The stable keys other tools read (see README 'estimate --json')."""
        out = {
            "step_time_ms": self.step_time_ms,
            "samples_per_s": self.samples_per_s,
            "tokens_per_s": self.tokens_per_s,
            "tflops_per_gpu": self.tflops_per_gpu,
            "mfu": self.mfu,
            "bubble_fraction": self.bubble_fraction,
            "peak_memory_bytes": self.peak_memory_bytes,
            "memory_per_stage_bytes": list(self.memory_per_stage_bytes),
            "feasible": self.feasible,
            "infeasible_reason": self.infeasible_reason,
            "breakdown_ms": self.breakdown.to_dict(),
            "boundaries": list(self.boundaries),
            "stages": [dataclasses.asdict(s) for s in self.stages],
        }
        if timeline:
            out["timeline"] = [dataclasses.asdict(t) for t in self.timeline]
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class EstimateSummary:
    """An Estimate without ``stages`` and ``timeline``: what ``pptune.cost.bulk.estimate_many`` returns.

    The fields mean what the same fields of Estimate mean (and equal them within 1e-9 relative).
    """

    step_time_ms: float
    breakdown: Breakdown
    samples_per_s: float
    tokens_per_s: float
    tflops_per_gpu: float
    mfu: float
    bubble_fraction: float
    peak_memory_bytes: int
    memory_per_stage_bytes: tuple[int, ...]
    feasible: bool
    infeasible_reason: str | None
    boundaries: tuple[int, ...]


def positional_constructor(cls: type) -> Callable[..., object]:
    """``make(*values)`` for a frozen slots dataclass, values in field order, without ``__post_init__``.

    The generated ``__init__`` of a frozen dataclass sets each field through ``object.__setattr__``; this
    constructor calls each slot's own setter (about 2.5x faster), for the thousands of results the bulk
    estimator builds. The result is the same object (equal, hashable, frozen).
    """
    names = [f.name for f in dataclasses.fields(cls)]
    namespace = {"new": object.__new__, "cls": cls, **{f"set_{n}": getattr(cls, n).__set__ for n in names}}
    source = (f"def make({', '.join(names)}):\n    o = new(cls)\n" + "".join(f"    set_{n}(o, {n})\n" for n in names)
              + "    return o\n")
    exec(source, namespace)  # noqa: S102 -- the source is built from the class's own field names
    return namespace["make"]
