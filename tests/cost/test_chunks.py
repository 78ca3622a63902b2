"""Chunk costs: DeepSpeed's blocking pipeline messages against Megatron's asynchronous ones."""

from __future__ import annotations

import numpy as np
import pytest

from pptune.cost import estimate
from pptune.cost.cache import CostCache
from pptune.cost.chunks import group_chunks, pipeline_schedule, table_arrays
from pptune.cost.layers import layer_table
from pptune.cost.orders import RENDEZVOUS_1F1B
from pptune.cost.partition import stage_boundaries
from pptune.cost.schedule import W_SHARE_OF_BACKWARD, simulate
from pptune.parallel import ParallelConfig


def chunk_costs(profile, cluster, config):
    """(per-chunk forward, backward, p2p per boundary, activations kept per micro-batch on stage 0) of one config."""
    table = layer_table(profile, micro_batch_size=config.micro_batch_size, tp=config.tp, dtype=config.dtype)
    bounds = stage_boundaries(profile, config)
    cache = CostCache()
    ch = group_chunks([config], [table_arrays(table, cache)], np.array([bounds]), cluster, seq_len=profile.seq_len,
                      w_share=W_SHARE_OF_BACKWARD, cache=cache)
    return (tuple(ch.fwd_ms[0].tolist()), tuple(ch.bwd_ms[0].tolist()), tuple(ch.p2p_ms[0].tolist()),
            int(ch.kept_bytes[0, 0]), table, bounds)


def test_a_blocking_message_holds_sender_and_receiver():
    # pp 2, m 2, F 1 ms, B 2 ms, 0.5 ms per message. Asynchronous (a lag): stage 0 ends B1 at 10.0. DeepSpeed
    # (TrainSchedule, blocking p2p): stage 0 sends F0's output at the start of its next step (1.0-1.5, stage 1
    # waits in RecvActivation), runs F1 (1.5-2.5), then waits in RecvGrad until stage 1 has run F0 and B0 and
    # reached SendGrad (4.5-5.0); it sends F1's output (5.0-5.5), runs B0 (5.5-7.5) and waits in RecvGrad for B1's
    # gradient, which stage 1 sends after F1 and B1 (8.5-9.0): B1 ends at 11.0.
    fwd, bwd, p2p = (1.0, 1.0), (2.0, 2.0), (0.5,)
    lag = simulate(fwd, bwd, schedule="1f1b", num_microbatches=2, p2p_ms=p2p)
    block = simulate(fwd, bwd, schedule=RENDEZVOUS_1F1B, num_microbatches=2, p2p_ms=p2p, timeline=True)
    assert lag.step_ms == pytest.approx(10.0) and block.step_ms == pytest.approx(11.0)
    starts = [(op.stage, op.op, op.microbatch, op.start_ms) for op in block.timeline]
    assert (0, "F", 1, 1.5) in starts and (0, "B", 0, 5.5) in starts and (0, "B", 1, 9.0) in starts
    assert block.busy_ms == (6.0, 6.0)  # the transfers are no stage work


@pytest.mark.parametrize("target", ["deepspeed", "megatron"])
def test_only_deepspeed_pipelines_block_on_sends(make_profile, make_cluster, target):
    profile = make_profile(blocks=8, edge_ms=0.5)
    cluster = make_cluster(4, gpus_per_node=1, inter_gbps=0.5)  # every stage boundary crosses a slow link
    config = ParallelConfig(pp=4, num_microbatches=8, target=target)
    est = estimate(profile, cluster, config)
    fwd, bwd, p2p = chunk_costs(profile, cluster, config)[:3]
    assert min(p2p) > 0.5  # messages matter here

    def step(schedule, lags):
        return simulate(fwd, bwd, schedule=schedule, num_microbatches=8, p2p_ms=lags).step_ms

    lagged, blocked = step("1f1b", p2p), step(RENDEZVOUS_1F1B, p2p)
    assert blocked > lagged
    assert pipeline_schedule(config) == (RENDEZVOUS_1F1B if target == "deepspeed" else "1f1b")
    schedule = pipeline_schedule(config)
    bare = step(schedule, [0.0] * len(p2p))
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
