"""Pipeline timeline (Gantt): every stage's forward, backward and weight-gradient boxes per micro-batch.

The question: where does the pipeline idle? The chosen schedule is drawn beside an alternative on the same
time axis: ZB-H1 for a 1F1B plan (Qi et al. ICLR'24 split the backward into B and W to fill the cool-down),
1F1B for the others, and 1F1B at pp 2 when the plan has a single stage (no pipeline, so no bubble to see).
An alternative that DeepSpeed's engine cannot run is computed as a Megatron-LM configuration (the pipeline
timeline does not depend on the target). A measured run (``measured.json``) adds its step time and, when it
recorded one, its own op timeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pptune.charts.variants import try_estimate, with_depth
from pptune.cost.cache import CostCache
from pptune.cost.types import Estimate, TimelineOp
from pptune.errors import SchemaError
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile
from pptune.runtime.measured import load_measured
from pptune.targets import rules_for


@dataclass(frozen=True, kw_only=True, slots=True)
class TimelinePanel:
    """One schedule's timeline."""

    title: str  # e.g. "1f1b (chosen)"
    config: ParallelConfig
    ops: tuple[TimelineOp, ...]
    pipeline_ms: float  # end of the last op (the pipeline part of the step)
    step_ms: float  # the whole predicted step (gradient reduction and optimizer included)
    bubble_fraction: float
    busy_ms: tuple[float, ...]  # per stage


@dataclass(frozen=True, kw_only=True, slots=True)
class MeasuredTimeline:
    """What a real run of the plan recorded: its median step and, when present, per-op boxes."""

    step_ms: float
    ops: tuple[TimelineOp, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class TimelineChart:
    panels: tuple[TimelinePanel, ...]  # the chosen schedule first
    measured: MeasuredTimeline | None


def alternative_config(config: ParallelConfig, *, gpus: int, num_layers: int) -> ParallelConfig | None:
    """The schedule to compare with (see the module docstring), or None when there is none."""
    if config.pp == 1:
        return with_depth(config, pp=2, gpus=gpus) if num_layers >= 2 else None
    schedule = "zb_h1" if config.schedule == "1f1b" else "1f1b"
    target = "megatron" if schedule != "1f1b" else config.target
    return config.replace(schedule=schedule, vpp=1, target=target,  # at a ZeRO stage the target plans
                          zero_stage=min(config.zero_stage, rules_for(target, config.pp).planned_max_zero_stage))


def panel(title: str, config: ParallelConfig, est: Estimate) -> TimelinePanel:
    ops = tuple(sorted(est.timeline, key=lambda o: (o.stage, o.start_ms)))
    return TimelinePanel(title=title, config=config, ops=ops, pipeline_ms=max((o.end_ms for o in ops), default=0.0),
                         step_ms=est.step_time_ms, bubble_fraction=est.bubble_fraction,
                         busy_ms=tuple(s.busy_ms for s in est.stages))


def _title(config: ParallelConfig, *, chosen: bool, reference: ParallelConfig) -> str:
    name = config.schedule + (f" vpp{config.vpp}" if config.vpp > 1 else "")
    if config.pp != reference.pp:
        name = f"pp{config.pp} dp{config.dp} {name}"
    return f"{name} ({'chosen' if chosen else 'alternative'})"


def timeline_series(profile: Profile, cluster: Cluster, config: ParallelConfig, *,
                    alternative: ParallelConfig | None = None, chosen: Estimate | None = None,
                    measured: MeasuredTimeline | None = None, cache: CostCache | None = None) -> TimelineChart:
    """The chosen configuration's timeline and an alternative schedule's.

    Args:
        profile, cluster, config: the plan.
        alternative: the configuration to compare with (default ``alternative_config``).
        chosen: the chosen estimate if already computed with ``timeline=True``.
        measured: a measured run to overlay.
    """
    est = chosen if chosen is not None and chosen.timeline else try_estimate(profile, cluster, config, timeline=True,
                                                                                  cache=cache)
    assert est is not None, "the chosen configuration must estimate"
    panels = [panel(_title(config, chosen=True, reference=config), config, est)]
    alt = alternative or alternative_config(config, gpus=cluster.num_gpus, num_layers=profile.num_layers)
    alt_est = try_estimate(profile, cluster, alt, timeline=True, cache=cache)
    if alt is not None and alt_est is not None:
        panels.append(panel(_title(alt, chosen=False, reference=config), alt, alt_est))
    return TimelineChart(panels=tuple(panels), measured=measured)


def load_measured_timeline(path: str | Path, config: ParallelConfig) -> MeasuredTimeline | None:
    """A measured run of this plan from ``measured.json``; None when absent or of another pipeline shape.

    ``measured.json`` (pptune.runtime.measured) holds step times and per-stage timers; an optional
    ``timeline`` list of ``{stage, microbatch, op, start_ms, end_ms}`` (one step) is drawn when present.
    """
    path = Path(path)
    if not path.exists():
        return None
    run = load_measured(path)
    if run.pp != config.pp or run.num_microbatches != config.num_microbatches:
        return None
    raw = json.loads(path.read_text()).get("timeline") or []
    try:
        ops = tuple(TimelineOp(stage=int(o["stage"]), chunk=int(o.get("chunk", 0)), microbatch=int(o["microbatch"]),
                               op=str(o["op"]), start_ms=float(o["start_ms"]), end_ms=float(o["end_ms"]))
                    for o in raw)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{path}: field 'timeline': each op needs stage, microbatch, op, start_ms, end_ms ({exc})") from None
    return MeasuredTimeline(step_ms=run.median_step_ms, ops=ops)
