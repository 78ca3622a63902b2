"""Context parallelism: one rank's share of the layer table, the K,V ring against the alpha-beta formula, the
rank placement, and estimate() = estimate_many() with cp (issue 18 item 2)."""

from __future__ import annotations

import pytest

from pptune.cost import comm, estimate
from pptune.cost.bulk import estimate_many
from pptune.cost.cache import CostCache
from pptune.cost.context_parallel import cp_far, ring_block_ms
from pptune.cost.layers import layer_table
from pptune.hardware import load_cluster
from pptune.model.spec import parse_spec
from pptune.parallel import ParallelConfig
from pptune.profile.analytic import analytic_profile
from pptune.testing.estimates import assert_same_summary

SPEC = parse_spec("llama:layers=8,hidden=2048,heads=16,kv_heads=4,ffn=5632,seq=32768,vocab=32000")
CLUSTER = load_cluster("h100-80g", num_gpus=32)
PROFILE = analytic_profile(SPEC, CLUSTER.gpu, tp=2, micro_batch_sizes=(1,))


def test_a_rank_holds_one_cp_share_of_every_token_field():
    cache = CostCache()
    whole = layer_table(PROFILE, micro_batch_size=1, tp=2, dtype="bf16", cache=cache)
    part = layer_table(PROFILE, micro_batch_size=1, tp=2, dtype="bf16", cp=4, cache=cache)
    assert part.cp == 4 and whole.cp == 1 and whole.kv_block_bytes == 0
    assert part.fwd_ms == pytest.approx([x / 4 for x in whole.fwd_ms])
    assert part.bwd_ms == pytest.approx([x / 4 for x in whole.bwd_ms])
    assert part.fwd_flops == pytest.approx([x / 4 for x in whole.fwd_flops])
    assert part.saved_bytes == tuple(round(x / 4) for x in whole.saved_bytes)
    assert part.output_bytes == tuple(round(x / 4) for x in whole.output_bytes)
    assert part.param_count == whole.param_count  # weights are not split by cp
    assert part.total("fwd_ms", 0, part.num_layers) == pytest.approx(sum(whole.fwd_ms) / 4)
    # K and V of a rank's 32768 / 4 tokens: 4 KV heads over tp 2, head dim 128, bf16
    assert part.kv_block_bytes == 8192 * 2 * 2 * 128 * 2


def test_ring_against_the_alpha_beta_formula():
    link = comm.Link(gbps=25.0, latency_us=10.0)
    kv = 50e6  # 2 ms at 25 GB/s, + 0.01 ms latency
    fwd, bwd = ring_block_ms(kv, attn_fwd_ms=4.0, cp=4, link=link)
    assert fwd == pytest.approx(3 * (0.01 + 2.0 - 4.0 / 4))  # each of cp - 1 steps hides 1/cp of attention
    assert bwd == pytest.approx(3 * (0.01 + 4.0 - 2 * 4.0 / 4))  # K,V and dK,dV: twice the bytes
    assert ring_block_ms(kv, attn_fwd_ms=40.0, cp=4, link=link) == (0.0, 0.0)  # all hidden
    assert ring_block_ms(kv, attn_fwd_ms=1.0, cp=1, link=link) == (0.0, 0.0)


def test_cp_groups_follow_megatron_rank_order():
    # tp-cp-dp-pp: a cp group is cp ranks tp apart
    assert not cp_far(8, tp=2, cp=4, dp=4, stage=0)  # ranks 0, 2, 4, 6: one node
    assert cp_far(8, tp=8, cp=2, dp=1, stage=0)  # ranks 0 and 8: two nodes
    assert cp_far(8, tp=4, cp=4, dp=1, stage=1)


def _config(**kw) -> ParallelConfig:
    base = dict(tp=2, pp=2, dp=2, cp=4, num_microbatches=4, target="megatron", partition="balanced", zero_stage=1)
    base.update(kw)
    return ParallelConfig(**base)


def test_estimate_and_estimate_many_agree_with_cp():
    slow = CLUSTER.replace(inter_node_gbps=2.0, intra_node_gbps=5.0)  # a ring that shows
    configs = [_config(), _config(cp=2, dp=4), _config(cp=8, dp=1, zero_stage=0), _config(recompute="full"),
               _config(pp=4, dp=1, schedule="interleaved_1f1b", vpp=2), _config(cp=1, dp=8)]
    many = estimate_many(PROFILE, slow, configs)
    for c, m in zip(configs, many, strict=True):
        one = estimate(PROFILE, slow, c)
        assert_same_summary(one, m, c)
        assert one.step_time_ms == pytest.approx(one.breakdown.step_ms, rel=1e-12)
        assert (one.breakdown.cp_comm_ms > 0) == (c.cp > 1), c.label()


def test_cp_splits_activations_and_keeps_the_gradient_sync_of_dp_x_cp():
    a = estimate(PROFILE, CLUSTER, _config(cp=2, dp=4))
    b = estimate(PROFILE, CLUSTER, _config(cp=1, dp=8))
    act_a = max(s.memory_parts_bytes["activations"] for s in a.stages)
    act_b = max(s.memory_parts_bytes["activations"] for s in b.stages)
    assert act_a == pytest.approx(act_b / 2, rel=0.01)
    # the same parameters reduced over 8 ranks of stride tp either way; ZeRO-1 shards over dp x cp too
    assert a.breakdown.dp_comm_ms == pytest.approx(b.breakdown.dp_comm_ms)
    assert a.stages[0].memory_parts_bytes["optimizer"] == b.stages[0].memory_parts_bytes["optimizer"]
    # a rank computes half the tokens: half the compute per micro-batch
    assert a.breakdown.compute_ms == pytest.approx(b.breakdown.compute_ms / 2, rel=1e-9)
    assert a.mfu == pytest.approx(b.mfu, rel=0.2)  # model FLOPs count the whole sequence


def test_cp_is_refused_outside_megatron_and_with_an_odd_split():
    from pptune.errors import ConfigError

    with pytest.raises(ConfigError, match="context parallelism .* is a Megatron feature"):
        ParallelConfig(cp=2, target="deepspeed")
    spec = parse_spec("llama:layers=8,hidden=2048,heads=16,kv_heads=4,ffn=5632,seq=1000,vocab=32000")
    prof = analytic_profile(spec, CLUSTER.gpu, tp=2, micro_batch_sizes=(1,))
    with pytest.raises(ConfigError, match="not a multiple of 2 x cp 8"):
        estimate(prof, CLUSTER.replace(num_nodes=4), _config(cp=8, dp=1))
