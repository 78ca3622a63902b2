"""Bubble-vs-micro-batches series: closed form on uniform stages, the chosen point, depth and count choices."""

from __future__ import annotations

import math

import pytest

from pptune.charts.bubble import bubble_series, microbatch_counts, pipeline_depths
from pptune.charts.variants import with_depth
from pptune.cost.estimate import estimate
from pptune.parallel import ParallelConfig


def test_uniform_stages_without_comm_follow_the_closed_form(make_profile, make_cluster):
    profile = make_profile(blocks=16)
    cluster = make_cluster(16)
    config = ParallelConfig(pp=4, dp=4, num_microbatches=8, partition="uniform", dtype="bf16")
    chart = bubble_series(profile, cluster, config, depths=(1, 2, 4, 8, 16))
    assert [line.pp for line in chart.lines] == [1, 2, 4, 8, 16]
    assert [line.dp for line in chart.lines] == [16, 8, 4, 2, 1]
    for line in chart.lines:
        p = line.pp
        for m, bubble in zip(line.num_microbatches, line.bubble_fraction, strict=True):
            assert bubble == pytest.approx((p - 1) / (m + p - 1), abs=1e-9), (p, m)


def test_chosen_point_is_the_plans_estimate_and_lies_on_its_line(make_profile, make_cluster):
    profile = make_profile(blocks=16, edges=True)
    cluster = make_cluster(8, free_links=False)
    config = ParallelConfig(pp=4, dp=2, num_microbatches=6, partition="parameters")
    chart = bubble_series(profile, cluster, config)
    est = estimate(profile, cluster, config)
    assert chart.chosen_bubble_fraction == est.bubble_fraction
    assert chart.chosen_tokens_per_s == est.tokens_per_s
    line = next(line for line in chart.lines if line.pp == 4)
    i = line.num_microbatches.index(6)
    assert line.bubble_fraction[i] == est.bubble_fraction and line.tokens_per_s[i] == est.tokens_per_s


def test_more_microbatches_mean_less_bubble_and_more_tokens(make_profile, make_cluster):
    chart = bubble_series(make_profile(blocks=16, edges=True), make_cluster(8, free_links=False),
                          ParallelConfig(pp=4, dp=2, num_microbatches=8))
    for line in chart.lines:
        if line.pp == 1:
            assert all(b == 0 for b in line.bubble_fraction)
            continue
        assert all(a > b for a, b in zip(line.bubble_fraction, line.bubble_fraction[1:], strict=False))
        assert all(a < b for a, b in zip(line.tokens_per_s, line.tokens_per_s[1:], strict=False))


def test_memory_feasibility_is_the_estimates(make_profile, make_cluster):
    # 1 GiB fixed reserve + model states: a 1.5 GiB GPU holds shallow pipelines only at small m.
    profile, cluster = make_profile(blocks=8, saved_bytes=64 * 2**20), make_cluster(4, memory_gib=1.5)
    chart = bubble_series(profile, cluster, ParallelConfig(pp=2, dp=2, num_microbatches=2), depths=(1, 2, 4))
    for line in chart.lines:
        for m, fits in zip(line.num_microbatches, line.feasible, strict=True):
            config = with_depth(ParallelConfig(pp=2, dp=2), pp=line.pp, gpus=4, num_microbatches=m)
            assert fits == estimate(profile, cluster, config).feasible
    assert any(not f for line in chart.lines for f in line.feasible) and any(f for line in chart.lines for f in line.feasible)


def test_invalid_points_are_nan_not_dropped(make_profile, make_cluster):
    # Interleaving needs m to be a multiple of pp: m = 1, 2 cannot run at pp 4.
    config = ParallelConfig(pp=4, dp=1, num_microbatches=8, schedule="interleaved_1f1b", vpp=2, target="megatron")
    chart = bubble_series(make_profile(blocks=16), make_cluster(4), config, depths=(4,), microbatches=(1, 2, 4, 8))
    line = chart.lines[0]
    assert [math.isnan(b) for b in line.bubble_fraction] == [True, True, False, False]
    assert line.feasible == (False, False, True, True)


def test_microbatch_counts_and_depths():
    assert microbatch_counts(96) == (1, 2, 4, 8, 16, 32, 64, 96, 128, 256, 512)
    assert microbatch_counts(1, at_least=32) == (1, 2, 4, 8, 16, 32)
    assert pipeline_depths(ranks=256, chosen=16, max_pp=98) == (4, 8, 16, 32)
    assert pipeline_depths(ranks=8, chosen=1, max_pp=26) == (1, 2, 4, 8)
    assert pipeline_depths(ranks=64, chosen=16, max_pp=20) == (2, 4, 8, 16)  # no depth beyond the layers


def test_with_depth_keeps_deepspeed_valid():
    base = ParallelConfig(pp=1, dp=8, zero_stage=3, num_microbatches=2)
    deeper = with_depth(base, pp=4, gpus=8)
    assert deeper is not None and (deeper.pp, deeper.dp, deeper.zero_stage) == (4, 2, 1)
    assert deeper.global_batch_size == base.global_batch_size and deeper.num_microbatches == 8
    assert with_depth(base, pp=4, gpus=8, num_microbatches=3).num_microbatches == 3
    assert with_depth(ParallelConfig(pp=2, dp=2, num_microbatches=1), pp=1, gpus=4) is None  # 2 samples, dp 4
    assert with_depth(base, pp=3, gpus=8) is None
    inter = ParallelConfig(pp=4, dp=2, schedule="interleaved_1f1b", vpp=2, target="megatron", num_microbatches=8)
    flat = with_depth(inter, pp=1, gpus=8)
    assert flat is not None and (flat.schedule, flat.vpp, flat.dp, flat.num_microbatches) == ("1f1b", 1, 8, 2)


def test_context_parallel_plans_keep_their_cp_at_every_depth(make_profile, make_cluster):
    """tp x cp ranks per stage replica: the other depths keep cp and fill the same GPUs (dp = GPUs / (tp cp pp))."""
    profile = make_profile(blocks=16, edges=True)
    cluster = make_cluster(16, free_links=False)
    config = ParallelConfig(cp=2, pp=4, dp=2, num_microbatches=8, partition="balanced", target="megatron")
    deeper = with_depth(config, pp=8, gpus=16)
    assert (deeper.cp, deeper.dp, deeper.world_size) == (2, 1, 16)
    chart = bubble_series(profile, cluster, config)
    assert {line.pp for line in chart.lines} >= {2, 4, 8}
    line = next(line for line in chart.lines if line.pp == 4)
    assert line.dp == 2 and line.bubble_fraction[line.num_microbatches.index(8)] == estimate(
        profile, cluster, config).bubble_fraction
