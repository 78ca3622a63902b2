"""Chunk costs: DeepSpeed's blocking pipeline sends against Megatron's asynchronous ones."""

from __future__ import annotations

import numpy as np
import pytest

from pptune.cost import estimate
from pptune.cost.cache import CostCache
from pptune.cost.chunks import group_chunks, table_arrays, with_blocking_sends
from pptune.cost.layers import layer_table
from pptune.cost.partition import stage_boundaries
from pptune.cost.schedule import W_SHARE_OF_BACKWARD, simulate
from pptune.parallel import ParallelConfig


def blocking_sends(fwd, bwd, p2p):
    """with_blocking_sends on one row, as tuples."""
    out = with_blocking_sends(np.array([fwd]), np.array([bwd]), np.array([p2p]), np.array([True]))
    return tuple(tuple(x[0].tolist()) for x in out)


def chunk_costs(profile, cluster, config):
    """(per-chunk forward, backward, p2p per boundary, activations kept per micro-batch on stage 0) of one config."""
    table = layer_table(profile, micro_batch_size=config.micro_batch_size, tp=config.tp, dtype=config.dtype)
    bounds = stage_boundaries(profile, config)
    cache = CostCache()
    ch = group_chunks([config], [table_arrays(table, cache)], np.array([bounds]), cluster, seq_len=profile.seq_len,
                      w_share=W_SHARE_OF_BACKWARD, cache=cache)
    return (tuple(ch.fwd_ms[0].tolist()), tuple(ch.bwd_ms[0].tolist()), tuple(ch.p2p_ms[0].tolist()),
            int(ch.kept_bytes[0, 0]), table, bounds)


def test_a_blocking_send_keeps_the_sender_busy():
    # pp 2, m 2, 1F1B, F 1 ms, B 2 ms, 0.5 ms per message. Asynchronous (a lag): stage 0 runs F0 F1 back to back
    # and ends B1 at 10.0. Blocking: F0 holds stage 0 until its send is done (1.5), stage 1's B0 until the
    # gradient is sent (5.0), so F1 ends at 3.0 and stage 1's B1 at 8.5; stage 0's B1 ends at 10.5.
    fwd, bwd, p2p = (1.0, 1.0), (2.0, 2.0), (0.5,)
    assert blocking_sends(fwd, bwd, p2p) == ((1.5, 1.0), (2.0, 2.5), (0.0,))
    lag = simulate(fwd, bwd, schedule="1f1b", num_microbatches=2, p2p_ms=p2p)
    block = simulate(*blocking_sends(fwd, bwd, p2p)[:2], schedule="1f1b", num_microbatches=2, p2p_ms=0.0)
    assert lag.step_ms == pytest.approx(10.0) and block.step_ms == pytest.approx(10.5)


@pytest.mark.parametrize("target", ["deepspeed", "megatron"])
def test_only_deepspeed_pipelines_block_on_sends(make_profile, make_cluster, target):
    profile = make_profile(blocks=8, edge_ms=0.5)
    cluster = make_cluster(4, gpus_per_node=1, inter_gbps=0.5)  # every stage boundary crosses a slow link
    config = ParallelConfig(pp=4, num_microbatches=8, target=target)
    est = estimate(profile, cluster, config)
    fwd, bwd, p2p = chunk_costs(profile, cluster, config)[:3]
    assert min(p2p) > 0.5  # messages matter here

    def step(fwd, bwd, lags):
        return simulate(fwd, bwd, schedule="1f1b", num_microbatches=8, p2p_ms=lags).step_ms

    bare = step(fwd, bwd, 0.0)
    lagged = step(fwd, bwd, p2p)
    blocked = step(*blocking_sends(fwd, bwd, p2p))
    assert blocked > lagged
    want = blocked if target == "deepspeed" else lagged
    assert est.breakdown.pp_comm_ms == pytest.approx(want - bare, rel=1e-12)
    assert est.breakdown.bubble_ms + est.breakdown.compute_ms == pytest.approx(bare, rel=1e-12)


def test_deepspeed_partitions_messages_over_tp_and_the_receiver_gathers_them(make_profile, make_cluster):
    from pptune.cost import comm

    profile = make_profile(blocks=8, edge_ms=0.5)
    cluster = make_cluster(4, gpus_per_node=2, inter_gbps=5.0)  # tp 2 inside a node, stages on two nodes
    got = {target: chunk_costs(profile, cluster, ParallelConfig(tp=2, pp=2, num_microbatches=4, target=target))
           for target in ("deepspeed", "megatron")}
    (ds_f, ds_b, ds_p2p, ds_kept, table, bounds), (mg_f, mg_b, mg_p2p, mg_kept) = got["deepspeed"], got["megatron"][:4]
    message = table.output_bytes[bounds[1] - 1]
    inter, intra = comm.inter(cluster), comm.intra(cluster)
    assert mg_p2p[0] == pytest.approx(comm.p2p_ms(message, inter))
    assert ds_p2p[0] == pytest.approx(comm.p2p_ms(message / 2, inter))  # each rank sends its half
    gather = comm.all_gather_ms(message, 2, intra)
    assert ds_f[1] == pytest.approx(mg_f[1] + gather)  # stage 1 gathers the activation
    assert ds_b[0] == pytest.approx(mg_b[0] + gather)  # stage 0 gathers the gradient
    assert ds_f[0] == pytest.approx(mg_f[0]) and ds_b[1] == pytest.approx(mg_b[1])
    # DeepSpeed keeps each in-flight output buffer, partitioned: 1/tp of it (Megatron keeps none).
    assert 2 * (ds_kept - mg_kept) == 2 * (message // 2)  # per micro-batch; stage 0 of 1F1B holds 2 of them
