"""PlanCharts: every chart series of one plan directory, computed once (``pptune.draw.plan`` draws them)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pptune.charts.balance import BalanceChart, balance_series
from pptune.charts.bubble import BubbleChart, bubble_series
from pptune.charts.context import MEASURED_FILE, RANKING_FILE, PlanContext, load_plan_context
from pptune.charts.mbs import MbsChart, mbs_series
from pptune.charts.pareto import ParetoChart, pareto_series, read_ranking
from pptune.charts.timeline import TimelineChart, load_measured_timeline, timeline_series
from pptune.cost.cache import CostCache
from pptune.runtime.measured import load_measured


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanCharts:
    """The five charts of a plan; ``pareto`` is None when the directory has no ranking.csv."""

    context: PlanContext
    bubble: BubbleChart
    mbs: MbsChart
    timeline: TimelineChart
    balance: BalanceChart
    pareto: ParetoChart | None


def plan_charts(plan_dir: str | os.PathLike | PlanContext) -> PlanCharts:
    """Compute every chart of a plan directory (its plan.json, ranking.csv and, if present, measured.json)."""
    ctx = plan_dir if isinstance(plan_dir, PlanContext) else load_plan_context(plan_dir)
    profile, cluster, config = ctx.profile, ctx.cluster, ctx.config
    measured_path = ctx.plan_dir / MEASURED_FILE
    run = load_measured(measured_path) if measured_path.exists() else None
    ranking_path = ctx.plan_dir / RANKING_FILE
    pareto = None
    if ranking_path.exists():
        pareto = pareto_series(read_ranking(ranking_path), chosen_label=ctx.label,
                               memory_limit_gib=cluster.gpu.memory_gib)
    cache = CostCache()  # the charts' estimates share layer tables, splits and compiled schedules
    return PlanCharts(
        context=ctx,
        bubble=bubble_series(profile, cluster, config, cache=cache),
        mbs=mbs_series(profile, cluster, config, cache=cache),
        timeline=timeline_series(profile, cluster, config, chosen=ctx.estimate,
                                 measured=load_measured_timeline(measured_path, config), cache=cache),
        balance=balance_series(profile, cluster, config, measured=run, cache=cache),
        pareto=pareto,
    )
