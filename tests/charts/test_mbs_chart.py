"""Micro-batch-size series: the memory line crosses the GPU limit exactly where the estimate turns infeasible."""

from __future__ import annotations

import pytest

from pptune.charts.mbs import mbs_series, micro_batch_sizes, oom_spans
from pptune.cost.estimate import estimate
from pptune.parallel import ParallelConfig

GIB = 2**30


def _inside(x: float, spans) -> bool:
    return any(lo <= x <= hi for lo, hi in spans)


def test_memory_crosses_the_limit_where_the_estimate_turns_infeasible(make_profile, make_cluster):
    profile = make_profile(blocks=8, saved_bytes=64 * 2**20, edges=True)
    config = ParallelConfig(pp=2, dp=2, micro_batch_size=1, num_microbatches=32)
    # Put the limit between the peaks at micro-batch 4 and 8, measured with a GPU that holds everything.
    roomy = mbs_series(profile, make_cluster(4, memory_gib=1000.0), config)
    assert roomy.micro_batch_sizes == (1, 2, 4, 8, 16, 32) and all(roomy.feasible) and roomy.oom_spans == ()
    p4, p8 = roomy.peak_memory_bytes[2], roomy.peak_memory_bytes[3]
    limit_gib = (p4 + 0.3 * (p8 - p4)) / GIB
    cluster = make_cluster(4, memory_gib=limit_gib)
    chart = mbs_series(profile, cluster, config)
    limit = cluster.gpu.memory_bytes
    assert chart.memory_limit_bytes == limit
    assert chart.feasible == (True, True, True, False, False, False)
    for size, peak, fits, stages in zip(chart.micro_batch_sizes, chart.peak_memory_bytes, chart.feasible,
                                        chart.memory_per_stage_bytes, strict=True):
        est = estimate(profile, cluster, config.replace(micro_batch_size=size, num_microbatches=32 // size))
        assert (peak, fits, stages) == (est.peak_memory_bytes, est.feasible, est.memory_per_stage_bytes)
        assert fits == (peak <= limit) and fits != _inside(size, chart.oom_spans)
    # each peak is explained by the peak stage's memory parts, which add up to it
    assert [sum(parts.values()) for parts in chart.peak_parts_bytes] == list(chart.peak_memory_bytes)
    assert all(parts["activations"] > 0 for parts in chart.peak_parts_bytes)
    (start, end), = chart.oom_spans
    assert start == pytest.approx(4 + 0.3 * 4) and end == 32
    # The crossing sits where the linear memory line meets the limit.
    assert p4 + (start - 4) / 4 * (p8 - p4) == pytest.approx(limit, rel=1e-9)


def test_global_batch_and_layout_stay_the_plans(make_profile, make_cluster):
    config = ParallelConfig(pp=2, dp=2, micro_batch_size=2, num_microbatches=12)  # 24 samples per replica
    chart = mbs_series(make_profile(blocks=8), make_cluster(4), config)
    assert chart.micro_batch_sizes == (1, 2, 4, 8)
    assert all(s * m == 24 for s, m in zip(chart.micro_batch_sizes, chart.num_microbatches, strict=True))
    assert chart.chosen_micro_batch_size == 2 and chart.pp == 2
    assert all(len(row) == 2 for row in chart.memory_per_stage_bytes)


def test_micro_batch_sizes_divide_the_replica_batch():
    assert micro_batch_sizes(ParallelConfig(dp=2, micro_batch_size=1, num_microbatches=48)) == (1, 2, 4, 8, 16)
    assert micro_batch_sizes(ParallelConfig(dp=1, micro_batch_size=3, num_microbatches=4)) == (1, 2, 3, 4)
    assert micro_batch_sizes(ParallelConfig(micro_batch_size=1, num_microbatches=1024), limit=16)[-1] == 16


@pytest.mark.parametrize(("peaks", "spans"), [
    ((10, 20, 40, 30), ((2.5, 8.0),)),  # crosses once, stays above to the end
    ((30, 20, 10, 10), ((1.0, 1 + 5 / 10),)),  # starts above, comes down between 1 and 2
    ((10, 30, 10, 30), ((1.75, 2 + 5 / 20 * 2), (4 + 15 / 20 * 4, 8.0))),  # two stretches
    ((10, 20, 25, 20), ()),  # touching the limit is not above it
])
def test_oom_spans(peaks, spans):
    got = oom_spans((1, 2, 4, 8), peaks, 25)
    assert len(got) == len(spans)
    assert [x for span in got for x in span] == pytest.approx([x for span in spans for x in span])
