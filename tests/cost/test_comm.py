"""Communication costs: ring formulas, and rank placement checked against DeepSpeed's own topology."""

from __future__ import annotations

import os

import pytest

from pptune.cost import comm

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def test_ring_formulas():
    link = comm.Link(gbps=100.0, latency_us=10.0)  # 1e8 bytes take 1 ms
    n = 1e8
    assert comm.p2p_ms(n, link) == pytest.approx(0.01 + 1.0)
    assert comm.all_reduce_ms(n, 4, link) == pytest.approx(2 * 3 / 4 * 1.0 + 2 * 3 * 0.01)
    assert comm.reduce_scatter_ms(n, 4, link) == pytest.approx(3 / 4 * 1.0 + 3 * 0.01)
    assert comm.all_gather_ms(n, 4, link) == comm.reduce_scatter_ms(n, 4, link)
    assert comm.all_reduce_ms(n, 1, link) == 0.0 and comm.p2p_ms(0, link) == 0.0
    # reduce-scatter + all-gather moves what an all-reduce moves
    rs_ag = comm.dp_grad_sync_ms(n, n, dp=4, zero_stage=1, link=link)
    assert rs_ag == pytest.approx(comm.dp_grad_sync_ms(n, n, dp=4, zero_stage=0, link=link))


def test_collectives_take_the_collective_step_latency(make_cluster):
    plain = comm.Link(gbps=100.0, latency_us=10.0)
    slow = comm.Link(gbps=100.0, latency_us=10.0, collective_latency_us=500.0)
    n = 1e8
    assert comm.p2p_ms(n, slow) == comm.p2p_ms(n, plain)  # p2p keeps the p2p latency
    assert comm.all_reduce_ms(n, 4, slow) == pytest.approx(2 * 3 / 4 * 1.0 + 2 * 3 * 0.5)
    assert comm.reduce_scatter_ms(n, 4, slow) == pytest.approx(3 / 4 * 1.0 + 3 * 0.5)
    assert comm.all_reduce_ms(n, 4, slow) - comm.all_reduce_ms(n, 4, plain) == pytest.approx(6 * 0.49)
    # a cluster's figures reach every link kind: inside a node, across nodes, tp and dp rings, stage pairs
    cluster = make_cluster(8, gpus_per_node=2).replace(intra_node_collective_latency_us=300.0,
                                                         inter_node_collective_latency_us=900.0)
    assert comm.tp_link(cluster, tp=2, dp=1, stage=0).collective_latency_us == 300.0
    assert comm.dp_link(cluster, tp=1, dp=4, stage=0).collective_latency_us == 900.0
    assert comm.tp_link(cluster, tp=4, dp=1, stage=0).collective_latency_us == 900.0  # tp over two nodes
    pair = comm.stage_pair_link(cluster, tp=1, dp=2, stage=0)
    assert pair.step_latency_ms == 0.9 and pair.latency_ms == cluster.inter_node_latency_us / 1e3


def test_tp_collectives_per_role():
    link = comm.Link(gbps=100.0, latency_us=0.0)
    one = comm.all_reduce_ms(1e8, 4, link)
    assert comm.tp_layer_ms("block", 1e8, 4, link) == pytest.approx((2 * one, 2 * one))
    assert comm.tp_layer_ms("embedding", 1e8, 4, link) == pytest.approx((one, 0.0))
    assert comm.tp_layer_ms("head", 1e8, 4, link) == pytest.approx((0.0, one))
    assert comm.tp_layer_ms("block", 1e8, 1, link) == (0.0, 0.0)


def test_sequence_parallel_collectives_per_role():
    """SP: forward all-gather + reduce-scatter per linear pair; backward re-gathers the column-parallel inputs."""
    link = comm.Link(gbps=100.0, latency_us=3.0)
    n, tp = 1e8, 4
    gather, scatter = comm.all_gather_ms(n, tp, link), comm.reduce_scatter_ms(n, tp, link)
    sp = {role: comm.tp_layer_ms(role, n, tp, link, sequence_parallel=True) for role in ("block", "embedding", "head")}
    # block forward: QKV and MLP-in gather, projection and MLP-out reduce-scatter
    assert sp["block"][0] == pytest.approx(2 * gather + 2 * scatter)
    # block backward: the row-parallel gradients gathered, the column-parallel inputs gathered again and
    # their input gradients reduce-scattered
    assert sp["block"][1] == pytest.approx(4 * gather + 2 * scatter)
    assert sp["embedding"] == pytest.approx((comm.all_reduce_ms(n, tp, link), gather))
    assert sp["head"] == pytest.approx((gather, gather + scatter))
    assert comm.tp_layer_ms("block", n, 1, link, sequence_parallel=True) == (0.0, 0.0)


def _node_of(rank: int, gpn: int) -> int:
    return rank // gpn


@pytest.mark.parametrize(("pp", "dp", "tp", "gpn"), [(4, 2, 2, 8), (2, 4, 4, 8), (8, 1, 2, 8), (3, 2, 2, 4),
                                                    (4, 3, 1, 8), (2, 2, 8, 8), (6, 1, 1, 4), (4, 1, 3, 8),
                                                    (2, 16, 2, 8), (1, 12, 2, 8), (2, 6, 3, 8), (1, 64, 1, 8)])
def test_placement_matches_deepspeed_topology(make_cluster, pp, dp, tp, gpn):
    from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

    topo = PipeModelDataParallelTopology(num_pp=pp, num_mp=tp, num_dp=dp)
    cluster = make_cluster(pp * dp * tp, gpus_per_node=gpn)
    inter = comm.inter(cluster)
    # TP groups are consecutive ranks, DP groups tp apart; a stage's link is inter-node iff one of its groups spans nodes
    for s in range(pp):
        tp_groups = [sorted(topo.filter_match(pipe=s, data=d)) for d in range(dp)]
        dp_groups = [sorted(topo.filter_match(pipe=s, model=m)) for m in range(tp)]
        assert all(g == list(range(g[0], g[0] + tp)) for g in tp_groups)
        assert all(g == list(range(g[0], g[0] + tp * dp, tp)) for g in dp_groups)
        spans = any(len({_node_of(r, gpn) for r in g}) > 1 for g in tp_groups)
        assert (comm.tp_link(cluster, tp=tp, dp=dp, stage=s) == inter) == spans, (s, "tp_link")
        # A DP ring across nodes runs on its ranks' NICs: the fewest ranks of a group on one node times the per-GPU
        # inter-node rate, at most NVLink's (inside a node: the intra-node link).
        link = comm.dp_link(cluster, tp=tp, dp=dp, stage=s)
        if any(len({_node_of(r, gpn) for r in g}) > 1 for g in dp_groups):
            fewest = min(min(sum(_node_of(r, gpn) == n for r in g) for n in {_node_of(r, gpn) for r in g})
                         for g in dp_groups)
            assert link == comm.Link(gbps=min(cluster.intra_node_gbps, fewest * inter.gbps),
                                     latency_us=inter.latency_us), s
        else:
            assert link == comm.intra(cluster), s
    # p2p between stage s and s+1: inter-node exactly when some pair of matching ranks sits on two nodes
    for s in range(pp - 1):
        crosses = any(
            _node_of(topo.get_rank(pipe=s, data=d, model=m), gpn) != _node_of(topo.get_rank(pipe=s + 1, data=d, model=m), gpn)
            for d in range(dp) for m in range(tp))
        assert (comm.stage_pair_link(cluster, tp=tp, dp=dp, stage=s) == inter) == crosses, s
    wraps = any(_node_of(topo.get_rank(pipe=0, data=d, model=m), gpn)
                != _node_of(topo.get_rank(pipe=pp - 1, data=d, model=m), gpn) for d in range(dp) for m in range(tp))
    assert (comm.first_last_link(cluster, tp=tp, dp=dp, pp=pp) == inter) == wraps


def test_zero2_reduces_every_microbatch_and_zero3_also_gathers_parameters() -> None:
    from pptune.cost.comm import Link, zero_exposed_ms, zero_microbatch_ms

    link = Link(gbps=100.0, latency_us=5.0)
    assert zero_microbatch_ms(1e9, 5e8, dp=8, zero_stage=1, link=link) == (0.0, 0.0)
    rs2, ag2 = zero_microbatch_ms(1e9, 5e8, dp=8, zero_stage=2, link=link)
    rs3, ag3 = zero_microbatch_ms(1e9, 5e8, dp=8, zero_stage=3, link=link)
    assert rs2 == rs3 > 0 and ag2 == 0 and ag3 > 0
    # ZeRO-2: every micro-batch but the last (the boundary sync) adds an exposed reduce-scatter.
    assert zero_exposed_ms(rs2, ag2, zero_stage=2, num_microbatches=8, busy_ms=1e9) == pytest.approx(7 * rs2)
    # ZeRO-3 overlaps with compute: hidden when compute is long, exposed beyond it.
    assert zero_exposed_ms(rs3, ag3, zero_stage=3, num_microbatches=8, busy_ms=1e9) == 0.0
    assert zero_exposed_ms(rs3, ag3, zero_stage=3, num_microbatches=8, busy_ms=0.0) == pytest.approx(7 * rs3 + 8 * ag3)


def test_estimate_charges_zero3_its_gathers(make_profile, make_cluster) -> None:
    from pptune.cost.estimate import estimate
    from pptune.parallel import ParallelConfig

    cluster = make_cluster(8)

    def dp_comm(profile, z: int, dtype: str = "fp16") -> float:
        cfg = ParallelConfig(dp=8, micro_batch_size=1, num_microbatches=16, zero_stage=z, dtype=dtype)
        return estimate(profile, cluster, cfg).breakdown.dp_comm_ms

    slow, fast = make_profile(), make_profile(block_fwd_ms=1e-4, block_bwd_ms=2e-4)
    # ZeRO-2's per-micro-batch reductions are exposed (overlap_comm is off by default below ZeRO-3).
    assert dp_comm(slow, 1) < dp_comm(slow, 2)
    # ZeRO-3's gathers hide behind long compute and show when there is none to hide behind.
    assert dp_comm(slow, 3) == pytest.approx(dp_comm(slow, 1))
    assert dp_comm(fast, 3) > dp_comm(fast, 2) > dp_comm(fast, 1)
    # bf16 at ZeRO 0/1 runs DeepSpeed's BF16_Optimizer: a full all-reduce, then the weights' all-gather.
    assert dp_comm(slow, 1, "bf16") == pytest.approx(1.5 * dp_comm(slow, 1), rel=0.01)
    assert dp_comm(slow, 0, "bf16") == pytest.approx(dp_comm(slow, 1, "bf16"))
    assert dp_comm(slow, 0, "fp16") == pytest.approx(dp_comm(slow, 1), rel=0.01)  # FP16_Optimizer: all-reduce only


def test_bf16_optimizer_all_reduces_then_gathers() -> None:
    from pptune.cost.comm import Link, all_gather_ms, all_reduce_ms, dp_grad_sync_ms, reduce_scatter_ms

    link = Link(gbps=25.0, latency_us=10.0)
    grads, weights = 2e9, 2e9
    assert dp_grad_sync_ms(grads, weights, dp=8, zero_stage=1, link=link) == pytest.approx(
        reduce_scatter_ms(grads, 8, link) + all_gather_ms(weights, 8, link))
    for zero in (0, 1):
        assert dp_grad_sync_ms(grads, weights, dp=8, zero_stage=zero, link=link, gather_after_all_reduce=True) == \
            pytest.approx(all_reduce_ms(grads, 8, link) + all_gather_ms(weights, 8, link))
    assert dp_grad_sync_ms(grads, weights, dp=1, zero_stage=1, link=link, gather_after_all_reduce=True) == 0.0
