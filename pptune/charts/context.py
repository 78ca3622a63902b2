"""PlanContext: what the charts of one plan directory need, rebuilt from plan.json (profile, cluster, config).

``pptune plan`` records the model source, the resized cluster and the chosen configuration in plan.json; the
charts re-run the cost model around that point, so the profile is rebuilt exactly as the planner built it:
``profile_for(source, cluster, tp=..., dtype=..., micro_batch_sizes=<the search space's sizes>)``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pptune.cost.estimate import estimate
from pptune.cost.types import Estimate
from pptune.errors import ConfigError, SchemaError
from pptune.hardware import Cluster, load_cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile
from pptune.profile.source import profile_for

PLAN_FILE = "plan.json"
RANKING_FILE = "ranking.csv"
MEASURED_FILE = "measured.json"


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanContext:
    """One plan's inputs and its re-computed estimate (with the timeline)."""

    plan_dir: Path
    model: str  # the model's name (preset, spec string or the profile's model)
    profile: Profile
    cluster: Cluster
    config: ParallelConfig
    estimate: Estimate  # re-computed with timeline=True
    planned_step_ms: float | None  # plan.json's estimate, to notice a profile that changed since planning
    global_batch_size: int
    command: str | None

    @property
    def label(self) -> str:
        return self.config.label() + (" sp" if self.config.sequence_parallel else "")

    @property
    def headline(self) -> str:
        """``gpt3-175b on 1024 x A100-SXM4-80GB (a100-80g), global batch 1536``: the first line of every title."""
        c = self.cluster
        return (f"{self.model} on {c.num_gpus} x {c.gpu.name} ({c.name}), global batch {self.global_batch_size}, "
                f"{self.profile.source} profile")

    @property
    def drifted(self) -> bool:
        """Whether today's estimate differs from the one recorded at planning time by more than 1%."""
        if self.planned_step_ms is None or self.planned_step_ms <= 0:
            return False
        return not math.isclose(self.estimate.step_time_ms, self.planned_step_ms, rel_tol=1e-2)


def read_plan_json(plan_dir: str | os.PathLike) -> dict[str, Any]:
    """plan.json of ``plan_dir`` as a dict (SchemaError, one line, when missing or malformed)."""
    path = Path(plan_dir) / PLAN_FILE
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read plan ({exc.strerror}); make one with 'pptune plan ... --out DIR'") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    for key in ("cluster", "config"):
        if key not in data:
            raise SchemaError(f"{path}: field '{key}': missing")
    return data


def _profile_source(source: str, plan_dir: Path) -> str:
    """A profile path as recorded (relative to where ``pptune plan`` ran): try it as is, then beside the plan."""
    if not source.endswith(".json") or Path(source).exists():
        return source
    for base in (plan_dir, *plan_dir.resolve().parents):
        candidate = base / source
        if candidate.exists():
            return str(candidate)
    raise SchemaError(f"profile {source!r} recorded in {plan_dir / PLAN_FILE} not found (run from the directory "
                      "'pptune plan' ran in)")


def load_plan_context(plan_dir: str | os.PathLike) -> PlanContext:
    """Rebuild a plan's profile, cluster and configuration from ``plan_dir/plan.json`` and re-estimate it.

    Reads the planner's plan.json and the slimmer one of a validation run directory (``pptune validate``:
    no ``model`` or ``global_batch_size``, the profile file under ``profile``).

    Raises:
        SchemaError: plan.json or the profile it names is missing or malformed.
        ConfigError: the recorded configuration no longer fits the profile or cluster.
    """
    plan_dir = Path(plan_dir)
    data = read_plan_json(plan_dir)
    origin = str(plan_dir / PLAN_FILE)
    try:
        config = ParallelConfig(**data["config"])
    except TypeError as exc:
        raise SchemaError(f"{origin}: field 'config': {exc}") from None
    cluster = load_cluster(data["cluster"])
    model = data.get("model") or {}
    recorded = model.get("source") or model.get("name") or data.get("profile")
    if not isinstance(recorded, str) or recorded.startswith("analytic:"):
        raise SchemaError(f"{origin}: field 'model': missing (no model source or profile file recorded)")
    source = _profile_source(recorded, plan_dir)
    sizes = tuple(data.get("search", {}).get("space", {}).get("micro_batch_sizes") or (config.micro_batch_size,))
    if config.micro_batch_size not in sizes:
        sizes = tuple(sorted({*sizes, config.micro_batch_size}))
    profile = profile_for(source, cluster, tp=config.tp, dtype=config.dtype, micro_batch_sizes=sizes)
    try:
        est = estimate(profile, cluster, config, timeline=True)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: the planned configuration no longer estimates: {exc}") from None
    planned = data.get("estimate", {}).get("step_time_ms")
    return PlanContext(
        plan_dir=plan_dir, model=str(model.get("name") or profile.model), profile=profile, cluster=cluster, config=config,
        estimate=est, planned_step_ms=float(planned) if isinstance(planned, (int, float)) else None,
        global_batch_size=int(data.get("global_batch_size") or config.global_batch_size), command=data.get("command"),
    )
