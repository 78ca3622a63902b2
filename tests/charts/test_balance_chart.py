"""Stage-balance series: the chosen and DeepSpeed's default splits, per-stage times that add up, measured stages."""

from __future__ import annotations

import pytest

from pptune.charts.balance import balance_series, split_methods
from pptune.cost.estimate import estimate
from pptune.cost.partition import stage_boundaries
from pptune.parallel import ParallelConfig


def test_chosen_split_first_then_deepspeeds_default(make_profile, make_cluster):
    profile = make_profile(blocks=16, edges=True)  # heavy embedding parameters, slow head: 'parameters' is uneven
    cluster = make_cluster(4, free_links=False)
    config = ParallelConfig(pp=4, num_microbatches=8, partition="balanced")
    chart = balance_series(profile, cluster, config)
    chosen, *others = chart.splits
    assert chosen.chosen and chosen.method.startswith("balanced") and not any(s.chosen for s in others)
    assert chosen.boundaries == stage_boundaries(profile, config)
    default = next(s for s in chart.splits if "parameters" in s.method)
    assert default.boundaries == stage_boundaries(profile, config.replace(partition="parameters"))
    assert default.boundaries != chosen.boundaries
    assert chosen.max_stage_ms < default.max_stage_ms and chosen.imbalance < default.imbalance
    est = estimate(profile, cluster, config)
    assert chosen.stages == est.stages and chosen.step_ms == est.step_time_ms
    assert chart.memory_limit_bytes == cluster.gpu.memory_bytes


def test_stage_times_add_up_to_the_layers(make_profile, make_cluster):
    profile = make_profile(blocks=12, edges=True)
    chart = balance_series(profile, make_cluster(3), ParallelConfig(pp=3, num_microbatches=6))
    total = sum(t.fwd_ms + t.bwd_ms for t in (layer.timing(1) for layer in profile.layers))
    for split in chart.splits:
        assert sum(split.stage_ms) == pytest.approx(total)
        assert [(s.first_layer, s.last_layer) for s in split.stages] == list(zip(split.boundaries, split.boundaries[1:], strict=False))


def test_identical_splits_are_one_group(make_profile, make_cluster):
    # Identical blocks only: parameters, balanced and uniform all cut 16 layers into 4 x 4.
    chart = balance_series(make_profile(blocks=16), make_cluster(4), ParallelConfig(pp=4, num_microbatches=4))
    assert len(chart.splits) == 1
    assert chart.splits[0].method == "parameters = balanced = uniform" and chart.splits[0].imbalance == pytest.approx(1)
    assert split_methods("type:block") == ("type:block", "parameters", "balanced", "uniform")


def test_measured_stages_per_microbatch(make_profile, make_cluster, make_measured):
    config = ParallelConfig(pp=2, num_microbatches=4)
    run = make_measured(pp=2, m=4, boundaries=(0, 8, 16), fwd_ms=3.0, bwd_ms=5.0)
    chart = balance_series(make_profile(blocks=16), make_cluster(2), config, measured=run)
    assert chart.measured is not None
    assert chart.measured.fwd_ms == (3.0, 3.0) and chart.measured.bwd_ms == (5.0, 5.0)
    assert chart.measured.boundaries == (0, 8, 16)
    other = balance_series(make_profile(blocks=16), make_cluster(4), config.replace(pp=4), measured=run)
    assert other.measured is None  # a run of another depth is not drawn


def test_single_stage_plan_shows_its_two_stage_variant(make_profile, make_cluster):
    config = ParallelConfig(pp=1, dp=4, num_microbatches=2, zero_stage=2)
    chart = balance_series(make_profile(blocks=8, edges=True), make_cluster(4), config)
    assert chart.what_if and (chart.config.pp, chart.config.dp, chart.config.num_microbatches) == (2, 2, 4)
    assert chart.config.zero_stage == 1 and all(len(s.stages) == 2 for s in chart.splits)
    assert chart.splits[0].chosen
