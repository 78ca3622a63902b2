"""PlanContext: a plan directory's profile, cluster and configuration are rebuilt and re-estimated as planned."""

from __future__ import annotations

import json
import os

import pytest

from pptune.charts.context import load_plan_context
from pptune.charts.plan_charts import plan_charts
from pptune.cost.estimate import estimate
from pptune.errors import SchemaError
from pptune.parallel import ParallelConfig


def test_round_trip(tmp_path, make_profile, make_cluster, make_plan_dir):
    profile, cluster = make_profile(blocks=8, edges=True), make_cluster(4, free_links=False)
    config = ParallelConfig(pp=2, dp=2, num_microbatches=4, partition="balanced")
    plan = make_plan_dir(tmp_path / "plan", profile=profile, cluster=cluster, config=config)
    ctx = load_plan_context(plan)
    assert ctx.config == config and ctx.cluster == cluster and ctx.profile.layers == profile.layers
    assert ctx.estimate.step_time_ms == estimate(profile, cluster, config).step_time_ms and not ctx.drifted
    assert ctx.estimate.timeline and ctx.global_batch_size == config.global_batch_size
    assert "synthetic on 4 x TestGPU" in ctx.headline and ctx.label == config.label()


def test_drift_is_noticed(tmp_path, make_profile, make_cluster, make_plan_dir):
    plan = make_plan_dir(tmp_path / "plan", profile=make_profile(blocks=8), cluster=make_cluster(2),
                         config=ParallelConfig(pp=2, num_microbatches=4))
    data = json.loads((plan / "plan.json").read_text())
    data["estimate"]["step_time_ms"] *= 1.5
    (plan / "plan.json").write_text(json.dumps(data))
    assert load_plan_context(plan).drifted


def test_relative_profile_path_resolves_beside_the_plan(tmp_path, make_profile, make_cluster, make_plan_dir):
    plan = make_plan_dir(tmp_path / "runs" / "plan", profile=make_profile(blocks=8), cluster=make_cluster(2),
                         config=ParallelConfig(pp=2, num_microbatches=4))
    data = json.loads((plan / "plan.json").read_text())
    data["model"]["source"] = os.path.join("plan", "profile.json")  # as recorded when planning from runs/
    (plan / "plan.json").write_text(json.dumps(data))
    assert load_plan_context(plan).profile.num_layers == 8


def test_missing_or_broken_plan_is_one_schema_error(tmp_path):
    with pytest.raises(SchemaError, match="cannot read plan"):
        load_plan_context(tmp_path)
    (tmp_path / "plan.json").write_text("{")
    with pytest.raises(SchemaError, match="not valid JSON"):
        load_plan_context(tmp_path)
    (tmp_path / "plan.json").write_text(json.dumps({"model": {}, "config": {}}))
    with pytest.raises(SchemaError, match="cluster"):
        load_plan_context(tmp_path)


def test_plan_charts_reads_ranking_and_measured(tmp_path, make_profile, make_cluster, make_plan_dir, make_measured):
    from pptune.runtime.measured import save_measured

    config = ParallelConfig(pp=2, num_microbatches=4)
    plan = make_plan_dir(tmp_path / "plan", profile=make_profile(blocks=8), cluster=make_cluster(2), config=config)
    charts = plan_charts(plan)
    assert charts.pareto is not None and len(charts.pareto.points) == 3 and charts.timeline.measured is None
    save_measured(make_measured(pp=2, m=4, boundaries=charts.context.estimate.boundaries), plan / "measured.json")
    charts = plan_charts(plan)
    assert charts.timeline.measured.step_ms == 110.0 and charts.balance.measured is not None
    (plan / "ranking.csv").unlink()
    assert plan_charts(plan).pareto is None


def test_validation_run_directory(tmp_path, make_profile, make_cluster, make_plan_dir):
    # pptune validate writes a slimmer plan.json: the profile path under 'profile', no model or global batch.
    config = ParallelConfig(pp=2, num_microbatches=4, micro_batch_size=2)
    plan = make_plan_dir(tmp_path / "run", profile=make_profile(blocks=8), cluster=make_cluster(2), config=config)
    data = json.loads((plan / "plan.json").read_text())
    for key in ("model", "global_batch_size", "search"):
        del data[key]
    (plan / "plan.json").write_text(json.dumps(data))
    ctx = load_plan_context(plan)
    assert ctx.model == "synthetic" and ctx.global_batch_size == 8 and ctx.config == config
    data["profile"] = "analytic:TestGPU"
    (plan / "plan.json").write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="model"):
        load_plan_context(plan)
