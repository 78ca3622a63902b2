"""tp 16 on 8-GPU nodes: estimate() accepts it and prices each tp collective as a ring all-reduce that leaves each
node through all 8 GPUs' NICs (8 x 50 GB/s, under NVLink's 450) at the inter-node latency (alpha-beta by hand),
where tp 8 inside a node runs at NVLink's rate and latency."""

from __future__ import annotations

import pytest

from pptune.cost.bulk import estimate_many
from pptune.cost.estimate import estimate
from pptune.errors import ConfigError
from pptune.parallel import ParallelConfig

BLOCKS, HIDDEN, SEQ, M = 4, 1024, 512, 4


def _ring_all_reduce_ms(nbytes: float, k: int, gbps: float, latency_us: float) -> float:
    """2 (k-1)/k n / bw + 2 (k-1) alpha (Thakur et al. 2005)."""
    return 2 * (k - 1) / k * nbytes / (gbps * 1e9) * 1e3 + 2 * (k - 1) * latency_us / 1e3


@pytest.mark.parametrize(("tp", "gbps", "us"), [(16, 8 * 50.0, 10.0), (8, 450.0, 5.0)])
def test_tp_collectives_by_hand(make_profile, make_cluster, tp, gbps, us):
    profile = make_profile(blocks=BLOCKS, edge_ms=0.5, hidden=HIDDEN, heads=16, seq=SEQ)
    cluster = make_cluster(16, gpus_per_node=8, intra_gbps=450.0, inter_gbps=50.0, intra_us=5.0, inter_us=10.0)
    config = ParallelConfig(tp=tp, dp=16 // tp, num_microbatches=M, target="megatron")
    est = estimate(profile, cluster, config)
    message = SEQ * HIDDEN * 2  # one micro-batch's [s, b, h] in bf16
    # Megatron: each block all-reduces twice forward and twice backward, the embedding once forward, the head
    # once backward (pptune.cost.comm.TP_COLLECTIVES), every micro-batch
    collectives = M * (4 * BLOCKS + 1 + 1)
    assert est.breakdown.tp_comm_ms == pytest.approx(collectives * _ring_all_reduce_ms(message, tp, gbps, us), rel=1e-9)
    (bulk,) = estimate_many(profile, cluster, [config])
    assert bulk.breakdown.tp_comm_ms == pytest.approx(est.breakdown.tp_comm_ms, rel=1e-9)


def test_a_tp_group_across_nodes_must_fill_them(make_profile, make_cluster):
    profile = make_profile(blocks=BLOCKS, edge_ms=0.5, hidden=HIDDEN, heads=12, seq=SEQ)
    with pytest.raises(ConfigError, match="must fill whole nodes"):
        estimate(profile, make_cluster(24, gpus_per_node=8), ParallelConfig(tp=12, dp=2, num_microbatches=M))
