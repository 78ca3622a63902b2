"""One validation row: a configuration, what the cost model predicted, what the real run measured.

Both sides report the same two figures, defined the same way so they can be compared:
- step time (ms): the estimate's ``step_time_ms``; the run's median barrier-to-barrier step.
- idle share: ``1 - sum over stages of compute / (pp * step)``, where a stage's compute is its forward and
  backward work per step (the estimate's ``StageCost`` (fwd_ms + bwd_ms) x micro-batches; the run's
  ``ForwardPass`` + ``BackwardPass`` instruction timers, averaged over the stage's data-parallel ranks) and the
  step is the mean step (timers are means). It is the pipeline bubble plus everything else that is not compute
  (p2p, reductions, optimizer, engine overhead); for uniform stages with no such costs it is (p-1)/(m+p-1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pptune.cost.types import Estimate
from pptune.parallel import ParallelConfig
from pptune.planner.ranking import config_label
from pptune.runtime.measured import Measured
from pptune.runtime.timers import BACKWARD, FORWARD


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRecord:
    """A configuration of the grid, predicted and (unless the run failed) measured."""

    config: ParallelConfig
    plan_dir: str
    predicted_ms: float
    predicted_idle: float
    breakdown_ms: dict[str, float]  # the estimate's additive parts
    boundaries: tuple[int, ...]
    measured_ms: float | None = None  # median step
    measured_mean_ms: float | None = None
    measured_min_ms: float | None = None
    measured_max_ms: float | None = None
    measured_idle: float | None = None
    measured_parts_ms: dict[str, float] = dataclasses.field(default_factory=dict)  # per-step timers, slowest stage
    failure: str | None = None  # why the real run produced no measurement
    load_average: float | None = None  # the host's 1-minute load average just before the run (other work on it)
    foreign_share: float | None = None  # share of the machine other processes used during the run (host_load.py)
    attempts: int = 1  # runs made of this configuration (a disturbed run is repeated; the least disturbed is kept)
    host_ratio: float | None = None  # host-speed probe around the run / the one around the profile (host_speed.py)

    @property
    def label(self) -> str:
        return config_label(self.config)

    @property
    def ok(self) -> bool:
        return self.measured_ms is not None

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured; positive when the model over-predicts."""
        return None if self.measured_ms is None else (self.predicted_ms - self.measured_ms) / self.measured_ms

    @property
    def predicted_samples_per_s(self) -> float:
        return self.config.global_batch_size / (self.predicted_ms / 1e3)

    @property
    def measured_samples_per_s(self) -> float | None:
        return None if self.measured_ms is None else self.config.global_batch_size / (self.measured_ms / 1e3)

    def to_row(self) -> dict[str, Any]:
        """The CSV row (see report.CSV_COLUMNS)."""
        c = self.config
        row: dict[str, Any] = {
            "configuration": self.label, "pp": c.pp, "tp": c.tp, "dp": c.dp, "micro_batch_size": c.micro_batch_size,
            "num_microbatches": c.num_microbatches, "partition": c.partition,
            "boundaries": " ".join(str(b) for b in self.boundaries),
            "predicted_ms": self.predicted_ms, "measured_ms": self.measured_ms, "error": self.error,
            "measured_min_ms": self.measured_min_ms, "measured_max_ms": self.measured_max_ms,
            "predicted_idle": self.predicted_idle, "measured_idle": self.measured_idle,
            "load_average": self.load_average, "foreign_cpu_share": self.foreign_share, "attempts": self.attempts,
            "host_ratio": self.host_ratio,
            "failure": self.failure or "",
        }
        row.update({f"pred_{k}": v for k, v in self.breakdown_ms.items()})
        row.update({f"meas_{k}": v for k, v in sorted(self.measured_parts_ms.items())})
        return row


def predicted_idle(estimate: Estimate, config: ParallelConfig) -> float:
    """Idle share of the predicted step (module docstring)."""
    m = config.num_microbatches
    compute = sum((s.fwd_ms + s.bwd_ms) * m for s in estimate.stages)
    return 1.0 - compute / (config.pp * estimate.step_time_ms)


def measured_compute_ms(measured: Measured) -> list[float]:
    """Forward + backward time per step of each stage (mean over its data-parallel ranks)."""
    return [s.timers_ms.get(FORWARD, 0.0) + s.timers_ms.get(BACKWARD, 0.0) for s in measured.stages]


def measured_idle(measured: Measured) -> float:
    """Idle share of the measured step (module docstring)."""
    return 1.0 - sum(measured_compute_ms(measured)) / (measured.pp * measured.mean_step_ms)


def measured_parts(measured: Measured) -> dict[str, float]:
    """Per-step instruction timers of the stage with the most compute (the critical stage), in ms."""
    compute = measured_compute_ms(measured)
    crit = measured.stages[max(range(len(compute)), key=compute.__getitem__)]
    return dict(crit.timers_ms)


def with_measurement(record: RunRecord, measured: Measured) -> RunRecord:
    """The record completed with a run's figures."""
    steps = measured.step_times_ms
    return dataclasses.replace(
        record, measured_ms=measured.median_step_ms, measured_mean_ms=measured.mean_step_ms,
        measured_min_ms=min(steps), measured_max_ms=max(steps), measured_idle=measured_idle(measured),
        measured_parts_ms=measured_parts(measured), failure=None,
    )
