"""estimate(): the additive breakdown, throughput and MFU, config checks, and closed-form behaviour on uniform profiles."""

from __future__ import annotations

import dataclasses

import pytest

from pptune.cost import estimate
from pptune.cost.stage_terms import OPTIMIZER_BYTES_PER_PARAM
from pptune.errors import ConfigError
from pptune.hardware import CLUSTER_PRESETS, load_cluster
from pptune.model.spec import PRESETS
from pptune.parallel import ParallelConfig
from pptune.profile.analytic import analytic_profile


def _free_links(make_cluster, n):
    # Links so fast that communication vanishes, to compare with closed forms.
    return make_cluster(n, intra_gbps=1e12, inter_gbps=1e12, intra_us=0.0, inter_us=0.0)


def test_step_is_the_sum_of_the_breakdown(make_profile, make_cluster):
    profile = make_profile(blocks=12, edge_ms=0.7, tied=True)
    for config in (ParallelConfig(pp=4, dp=2, num_microbatches=8, zero_stage=1),
                   ParallelConfig(pp=2, tp=2, dp=2, num_microbatches=4, target="megatron", schedule="zb_h1",
                                  recompute="full"),
                   ParallelConfig(pp=4, tp=2, num_microbatches=8, target="megatron", schedule="interleaved_1f1b",
                                  vpp=2, sequence_parallel=True, recompute="selective")):
        est = estimate(profile, make_cluster(config.world_size, gpus_per_node=4), config)
        b = est.breakdown
        assert est.step_time_ms == b.step_ms
        assert min(b.compute_ms, b.bubble_ms, b.pp_comm_ms, b.tp_comm_ms, b.dp_comm_ms, b.optimizer_ms) >= 0
        assert b.pp_comm_ms > 0 and b.tp_comm_ms >= 0
        assert est.samples_per_s == pytest.approx(config.global_batch_size / (est.step_time_ms / 1e3))
        assert est.tokens_per_s == pytest.approx(est.samples_per_s * profile.seq_len)
        assert est.mfu == pytest.approx(est.tflops_per_gpu / 989.0)
        assert len(est.stages) == config.pp and len(est.boundaries) == config.pp * config.vpp + 1
        assert est.timeline == ()


def test_uniform_profile_bubble_approaches_the_closed_form(make_profile, make_cluster):
    profile = make_profile(blocks=16)  # identical layers, no embedding/head
    pp = 4
    cluster = _free_links(make_cluster, pp)
    previous = 1.0
    for m in (1, 2, 4, 8, 16, 32, 64):
        est = estimate(profile, cluster, ParallelConfig(pp=pp, num_microbatches=m, partition="uniform"))
        closed = (pp - 1) / (m + pp - 1)
        assert est.bubble_fraction == pytest.approx(closed, abs=1e-4)
        assert est.bubble_fraction < previous
        previous = est.bubble_fraction
        b = est.breakdown
        assert b.compute_ms == pytest.approx(m * 4 * 3.0)  # 4 layers of 1 + 2 ms on the critical stage
        assert b.bubble_ms == pytest.approx((pp - 1) * 4 * 3.0, rel=1e-6)


def test_pp1_has_no_bubble_and_no_p2p(make_profile, make_cluster):
    est = estimate(make_profile(blocks=4, edge_ms=0.5), make_cluster(1), ParallelConfig(num_microbatches=4))
    assert est.breakdown.bubble_ms == 0 and est.breakdown.pp_comm_ms == 0 and est.bubble_fraction == 0


def test_recompute_adds_a_forward_and_saves_memory(make_profile, make_cluster):
    profile, cluster = make_profile(blocks=8), make_cluster(2)
    base = ParallelConfig(pp=2, num_microbatches=4)
    plain, full = estimate(profile, cluster, base), estimate(profile, cluster, base.replace(recompute="full"))
    assert full.breakdown.compute_ms == pytest.approx(plain.breakdown.compute_ms * 4 / 3)  # f + b -> 2f + b
    # the activations shrink; the peak never grows (with bf16 the BF16_Optimizer's step can be the peak moment, which
    # recompute does not change: pptune.cost.memory.memory_parts)
    assert full.peak_memory_bytes <= plain.peak_memory_bytes
    acts = [[s.memory_parts_bytes["activations"] for s in e.stages] for e in (plain, estimate(
        profile, cluster, base.replace(dtype="fp32", target="megatron")), estimate(
        profile, cluster, base.replace(dtype="fp32", target="megatron", recompute="full")))]
    assert sum(acts[2]) < sum(acts[1])


def test_zero_bubble_beats_1f1b_and_interleaving_shrinks_the_bubble(make_profile, make_cluster):
    profile, cluster = make_profile(blocks=16), _free_links(make_cluster, 4)
    base = ParallelConfig(pp=4, num_microbatches=8, target="megatron", partition="uniform")
    one = estimate(profile, cluster, base)
    zb = estimate(profile, cluster, base.replace(schedule="zb_h1"))
    inter = estimate(profile, cluster, base.replace(schedule="interleaved_1f1b", vpp=2))
    assert zb.step_time_ms < one.step_time_ms and inter.step_time_ms < one.step_time_ms
    assert inter.breakdown.bubble_ms == pytest.approx(one.breakdown.bubble_ms / 2, rel=1e-6)


def test_dp_reduction_is_exposed_for_deepspeed_and_mostly_hidden_for_megatron(make_profile, make_cluster):
    profile, cluster = make_profile(blocks=16, hidden=4096), make_cluster(8, gpus_per_node=4)
    ds = estimate(profile, cluster, ParallelConfig(pp=2, dp=4, num_microbatches=4))
    mg = estimate(profile, cluster, ParallelConfig(pp=2, dp=4, num_microbatches=4, target="megatron"))
    assert ds.breakdown.dp_comm_ms > 4 * mg.breakdown.dp_comm_ms > 0
    one = estimate(profile, make_cluster(2), ParallelConfig(pp=2, num_microbatches=4))
    assert one.breakdown.dp_comm_ms == 0


def test_optimizer_time_is_memory_bound(make_profile, make_cluster):
    profile, cluster = make_profile(blocks=8), make_cluster(1)
    est = estimate(profile, cluster, ParallelConfig(dtype="fp16"))
    gpu = cluster.gpu
    want = profile.param_count * OPTIMIZER_BYTES_PER_PARAM["mixed"] / (gpu.hbm_gbps * gpu.memory_efficiency * 1e6)
    assert est.breakdown.optimizer_ms == pytest.approx(want)


def test_overhead_comes_from_the_cluster(make_profile, make_cluster):
    cluster = make_cluster(2).replace(per_microbatch_overhead_ms=0.5, per_step_overhead_ms=3.0)
    est = estimate(make_profile(blocks=4), cluster, ParallelConfig(pp=2, num_microbatches=6))
    assert est.breakdown.overhead_ms == pytest.approx(0.5 * 6 + 3.0)


def test_flops_fall_back_to_6_n_tokens(make_profile, make_cluster):
    profile = make_profile(blocks=4, edge_ms=0.1)
    no_flops = dataclasses.replace(profile, layers=tuple(
        dataclasses.replace(layer, timings=tuple(dataclasses.replace(t, fwd_flops=0.0) for t in layer.timings))
        for layer in profile.layers))
    est = estimate(no_flops, make_cluster(1), ParallelConfig(num_microbatches=2, micro_batch_size=2))
    tokens = 2 * 2 * profile.seq_len
    assert est.tflops_per_gpu == pytest.approx(6 * profile.param_count * tokens / (est.step_time_ms / 1e3) / 1e12)


def test_timeline_on_request(make_profile, make_cluster):
    est = estimate(make_profile(blocks=4), make_cluster(2), ParallelConfig(pp=2, num_microbatches=3), timeline=True)
    assert len(est.timeline) == 2 * 2 * 3
    assert max(t.end_ms for t in est.timeline) == pytest.approx(est.step_time_ms - est.breakdown.dp_comm_ms
                                                                - est.breakdown.optimizer_ms)


def test_memory_feasibility_names_the_stage(make_profile, make_cluster):
    profile = make_profile(blocks=8, hidden=8192, seq=4096)
    est = estimate(profile, make_cluster(2, memory_gib=16.0), ParallelConfig(pp=2, num_microbatches=8, micro_batch_size=4))
    assert not est.feasible
    assert "stage 0 needs" in est.infeasible_reason and "> 16.0 GiB" in est.infeasible_reason
    assert est.peak_memory_bytes == max(est.memory_per_stage_bytes)


@pytest.mark.parametrize(("kw", "cluster_gpus", "message"), [
    ({"pp": 12}, 12, "pp 12 > 10 pipeline layers"),
    ({"tp": 3, "dp": 1}, 3, "16 attention heads of synthetic are not divisible by tp 3"),
    ({"dp": 4}, 8, "tp 1 x pp 1 x dp 4 = 4 GPUs but cluster test-8 has 8"),
    ({"pp": 4, "schedule": "interleaved_1f1b", "vpp": 2, "num_microbatches": 6, "target": "megatron"}, 4,
     "micro-batches per step 6 to be a multiple of pp 4"),
])
def test_config_errors_show_the_numbers(make_profile, make_cluster, kw, cluster_gpus, message):
    profile = make_profile(blocks=8, edge_ms=0.1)
    with pytest.raises(ConfigError, match=message):
        estimate(profile, make_cluster(cluster_gpus), ParallelConfig(**kw))


def test_analytic_gpt3_on_h100_is_plausible():
    spec = PRESETS["gpt3-13b"]
    cluster = load_cluster("h100-80g", num_gpus=16)
    profile = analytic_profile(spec, cluster.gpu, tp=4, micro_batch_sizes=(1, 2))
    est = estimate(profile, cluster, ParallelConfig(tp=4, pp=2, dp=2, num_microbatches=32, micro_batch_size=1,
                                                    zero_stage=1, target="megatron", sequence_parallel=True))
    assert est.feasible, est.infeasible_reason
    assert 0.2 < est.mfu < 0.8
    assert "h100-80g" in CLUSTER_PRESETS


def test_positional_constructor_builds_the_same_frozen_object():
    from pptune.cost.types import Breakdown, EstimateSummary, positional_constructor

    values = dict(compute_ms=1.0, bubble_ms=2.0, pp_comm_ms=3.0, tp_comm_ms=4.0, dp_comm_ms=5.0, optimizer_ms=6.0,
                  overhead_ms=7.0, cp_comm_ms=8.0)
    made = positional_constructor(Breakdown)(*values.values())
    assert made == Breakdown(**values) and hash(made) == hash(Breakdown(**values))
    assert list(values) == [f.name for f in dataclasses.fields(Breakdown)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.compute_ms = 0.0  # type: ignore[misc]
    summary = positional_constructor(EstimateSummary)(*[made.compute_ms] * 12)
    assert [getattr(summary, f.name) for f in dataclasses.fields(EstimateSummary)] == [1.0] * 12


def test_figures_beyond_floats_are_an_error_not_nan(make_profile, make_cluster):
    from pptune.cost.bulk import estimate_many

    profile = make_profile(blocks=4)
    huge = dataclasses.replace(profile, layers=tuple(
        dataclasses.replace(layer, timings=tuple(dataclasses.replace(t, bwd_ms=1e308) for t in layer.timings))
        for layer in profile.layers))
    config = ParallelConfig(pp=2, num_microbatches=8)
    with pytest.raises(ConfigError, match="not a finite number"):
        estimate(huge, make_cluster(2), config)
    got = estimate_many(huge, make_cluster(2), [config, config.replace(num_microbatches=4)])
    assert all(isinstance(g, ConfigError) and "not a finite number" in str(g) for g in got)
    assert estimate(profile, make_cluster(2), config).step_time_ms > 0  # the same configuration, sane figures
