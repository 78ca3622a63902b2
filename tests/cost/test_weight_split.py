"""zb_h1 with a profile's measured backward split: estimate() and estimate_many() agree, other schedules don't move,
and a profile without a split keeps the fixed half (W_SHARE_OF_BACKWARD)."""

from __future__ import annotations

import dataclasses

import pytest

from pptune.cost.bulk import estimate_many
from pptune.cost.estimate import estimate
from pptune.parallel import ParallelConfig
from pptune.profile.schema import backward_split


def _with_split(profile, share: float):
    """``profile`` with each timing's backward split W = share x bwd (edge layers included)."""
    layers = tuple(dataclasses.replace(layer, timings=tuple(
        dataclasses.replace(t, **backward_split(t.bwd_ms, (1 - share) * t.bwd_ms)) for t in layer.timings))
        for layer in profile.layers)
    return dataclasses.replace(profile, layers=layers)


CONFIGS = [ParallelConfig(pp=4, num_microbatches=m, micro_batch_size=b, schedule=s, target="megatron")
           for m in (4, 8) for b in (1, 2) for s in ("zb_h1", "1f1b")]


def test_estimate_many_agrees_with_estimate_on_a_split_profile(make_profile, make_cluster):
    profile, cluster = _with_split(make_profile(blocks=8, edge_ms=0.5), 0.35), make_cluster(4)
    bulk = estimate_many(profile, cluster, CONFIGS)
    for config, summary in zip(CONFIGS, bulk, strict=True):
        one = estimate(profile, cluster, config)
        assert summary.step_time_ms == pytest.approx(one.step_time_ms, rel=1e-9)
        assert summary.bubble_fraction == pytest.approx(one.bubble_fraction, rel=1e-9, abs=1e-12)


def test_the_split_moves_zb_h1_only_and_no_split_means_half(make_profile, make_cluster):
    base, cluster = make_profile(blocks=8, edge_ms=0.5), make_cluster(4)
    half, smaller = _with_split(base, 0.5), _with_split(base, 0.35)
    for config in CONFIGS:
        plain, even, measured = (estimate(p, cluster, config) for p in (base, half, smaller))
        assert plain.step_time_ms == even.step_time_ms  # no split = the even split, bit for bit
        if config.schedule == "zb_h1":  # a smaller W fills less of the bubble
            assert measured.bubble_fraction > plain.bubble_fraction
        else:
            assert measured.step_time_ms == plain.step_time_ms
