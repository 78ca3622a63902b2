"""Stage balance: per-stage compute time and memory of the chosen layer split beside the other splits.

The question: is the split even, and what does it cost against DeepSpeed's default? DeepSpeed's
``PipelineModule`` splits by ``partition_method="parameters"`` unless told otherwise (deepspeed/runtime/pipe/
module.py); it balances parameter counts, so the embedding and the head (few FLOPs per parameter, or many)
can leave stages uneven in time. ``balanced`` is pptune's min-max split by time. The slowest stage sets the
1F1B steady state, so ``max_stage_ms`` is what a split is judged by. A plan with a single stage has nothing
to split; its chart shows the same configuration at pp 2 (same global batch), marked ``what_if``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pptune.charts.variants import try_estimate, with_depth
from pptune.cost.cache import CostCache
from pptune.cost.types import StageCost
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile
from pptune.runtime.measured import Measured
from pptune.runtime.timers import BACKWARD, FORWARD

DEEPSPEED_DEFAULT = "parameters"


@dataclass(frozen=True, kw_only=True, slots=True)
class Split:
    """One partition method's stages under the plan's configuration."""

    method: str  # methods that give the same boundaries are joined: "parameters = balanced"
    chosen: bool
    boundaries: tuple[int, ...]
    stages: tuple[StageCost, ...]
    step_ms: float
    tokens_per_s: float
    feasible: bool

    @property
    def stage_ms(self) -> tuple[float, ...]:
        """Forward + backward time of one micro-batch on each stage."""
        return tuple(s.fwd_ms + s.bwd_ms for s in self.stages)

    @property
    def max_stage_ms(self) -> float:
        return max(self.stage_ms)

    @property
    def imbalance(self) -> float:
        """Slowest stage over the mean stage: 1.0 is a perfect split."""
        times = self.stage_ms
        mean = sum(times) / len(times)
        return self.max_stage_ms / mean if mean > 0 else 1.0


@dataclass(frozen=True, kw_only=True, slots=True)
class MeasuredStages:
    """Per-micro-batch forward and backward time of each stage in a real run (pipeline instruction timers)."""

    boundaries: tuple[int, ...]
    fwd_ms: tuple[float, ...]
    bwd_ms: tuple[float, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class BalanceChart:
    splits: tuple[Split, ...]  # the chosen split first
    config: ParallelConfig  # the configuration drawn: the plan's, or its pp 2 variant (``what_if``)
    what_if: bool  # the plan has a single stage (nothing to split), so its two-stage variant is drawn
    memory_limit_bytes: int
    measured: MeasuredStages | None


def split_methods(chosen: str) -> tuple[str, ...]:
    """The chosen method, DeepSpeed's default, pptune's ``balanced`` and ``uniform`` (each once, chosen first)."""
    return tuple(dict.fromkeys((chosen, DEEPSPEED_DEFAULT, "balanced", "uniform")))


def measured_stages(run: Measured | None, config: ParallelConfig) -> MeasuredStages | None:
    """Per-micro-batch stage times of a measured run of this plan (None when absent or of another shape)."""
    if run is None or run.pp != config.pp or not run.stages:
        return None
    m = run.num_microbatches
    fwd = tuple(s.timers_ms.get(FORWARD, 0.0) / m for s in run.stages)
    bwd = tuple(s.timers_ms.get(BACKWARD, 0.0) / m for s in run.stages)
    return MeasuredStages(boundaries=tuple(run.boundaries), fwd_ms=fwd, bwd_ms=bwd)


def balance_series(profile: Profile, cluster: Cluster, config: ParallelConfig, *,
                   methods: tuple[str, ...] | None = None, measured: Measured | None = None,
                   cache: CostCache | None = None) -> BalanceChart:
    """Per-stage time and memory of each split method at the plan's configuration.

    Args:
        profile, cluster, config: the plan.
        methods: partition methods to compare (default: chosen, ``parameters``, ``balanced``, ``uniform``).
        measured: a real run of the plan, drawn beside the chosen split when its stages match.
    """
    what_if = False
    if config.pp == 1 and profile.num_layers >= 2:
        deeper = with_depth(config, pp=2, gpus=cluster.num_gpus)
        if deeper is not None:
            config, what_if = deeper, True
    splits: list[Split] = []
    for method in methods or split_methods(config.partition):
        est = try_estimate(profile, cluster, config.replace(partition=method), cache=cache)
        if est is None:
            continue
        same = next((k for k, s in enumerate(splits) if s.boundaries == est.boundaries), None)
        if same is not None:  # an identical split is one bar group, named by every method that gives it
            splits[same] = dataclasses.replace(splits[same], method=f"{splits[same].method} = {method}")
            continue
        splits.append(Split(method=method, chosen=method == config.partition, boundaries=est.boundaries,
                            stages=est.stages, step_ms=est.step_time_ms, tokens_per_s=est.tokens_per_s,
                            feasible=est.feasible))
    return BalanceChart(splits=tuple(splits), config=config, what_if=what_if, memory_limit_bytes=cluster.gpu.memory_bytes,
                        measured=None if what_if else measured_stages(measured, config))
