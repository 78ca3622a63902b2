"""Per-stage memory: model-state bytes per parameter and ZeRO, in-flight activations per schedule, recompute."""

from __future__ import annotations

import pytest

from pptune.cost import estimate
from pptune.cost.cache import CostCache
from pptune.cost.layers import layer_table
from pptune.cost.memory import (
    ALLOCATOR_SLACK_FRACTION,
    CUDA_CONTEXT_BYTES,
    DS_REDUCE_BUCKET_ELEMENTS,
    FRAMEWORK_PARTS,
    MEMORY_PARTS,
    NCCL_BUFFER_BYTES,
    TENSOR_PARTS,
    bucket_bytes,
    bytes_per_param,
    inflight_units,
    logits_bytes,
    step_working_share,
)
from pptune.cost.stage_terms import stage_terms
from pptune.hardware import load_cluster
from pptune.parallel import ParallelConfig


def _mem(profile, cluster="a100-80g", **kw):
    """(layer table, boundaries, each stage's memory parts) of estimate() with DeepSpeed's uniform split."""
    config = ParallelConfig(partition="uniform", **kw)
    table = layer_table(profile, micro_batch_size=config.micro_batch_size, tp=config.tp, dtype=config.dtype)
    est = estimate(profile, load_cluster(cluster, num_gpus=config.world_size), config)  # fits: parts only
    parts = [stage.memory_parts_bytes for stage in est.stages]
    assert all(list(p) == list(MEMORY_PARTS) for p in parts)
    assert [sum(p.values()) for p in parts] == list(est.memory_per_stage_bytes)
    return table, est.boundaries, parts


def test_bytes_per_parameter():
    assert bytes_per_param(ParallelConfig(dtype="fp32")) == (4, 4, 8)
    assert bytes_per_param(ParallelConfig(dtype="bf16")) == (2, 6, 12)  # bf16 .grad + fp32 accumulation
    assert bytes_per_param(ParallelConfig(dtype="fp16")) == (2, 2, 12)
    assert bytes_per_param(ParallelConfig(dtype="bf16", target="megatron")) == (2, 4, 12)
    # DeepSpeedZeroOptimizer: its own fp32 master partition and fp32 gradient partition beside Adam's m, v
    assert bytes_per_param(ParallelConfig(dtype="fp32", zero_stage=1)) == (4, 4, 16)
    assert bytes_per_param(ParallelConfig(dtype="fp16", zero_stage=2)) == (2, 2, 16)
    assert bytes_per_param(ParallelConfig(dtype="bf16", zero_stage=1)) == (2, 6, 12)  # BF16_Optimizer instead
    assert bytes_per_param(ParallelConfig(dtype="fp16", zero_stage=1, target="megatron")) == (2, 4, 12)


def _states(profile, **kw):
    """Per stage (weights, gradients, optimizer) bytes: the model states, whatever moment the peak is."""
    config = ParallelConfig(partition="uniform", **kw)
    table, bounds, _ = _mem(profile, **kw)
    terms = stage_terms(table, bounds, config, load_cluster("a100-80g", num_gpus=config.world_size), CostCache())
    return [dict(zip(("weights", "gradients", "optimizer"), col, strict=True)) for col in terms.states.T.tolist()]


def test_model_states_and_zero(make_profile):
    profile = make_profile(blocks=8)
    params = sum(layer.param_count for layer in profile.layers[:4])
    mem = _states(profile, pp=2, dp=4, dtype="fp16", zero_stage=0)
    assert mem[0]["weights"] == 2 * params and mem[0]["gradients"] == 2 * params
    assert mem[0]["optimizer"] == 12 * params  # fp16 without ZeRO keeps every optimizer state
    z1 = _states(profile, pp=2, dp=4, dtype="fp16", zero_stage=1)
    assert z1[0]["optimizer"] == 16 * params // 4 and z1[0]["gradients"] == 2 * params
    z2 = _states(profile, pp=1, dp=4, dtype="fp16", zero_stage=2)
    z3 = _states(profile, pp=1, dp=4, dtype="fp16", zero_stage=3)
    all_params = profile.param_count
    assert z2[0]["gradients"] == 2 * all_params // 4 and z2[0]["weights"] == 2 * all_params
    assert z3[0]["weights"] == 2 * all_params // 4
    # DeepSpeed's BF16_Optimizer splits the fp32 states over DP even at ZeRO 0
    bf = _states(profile, pp=2, dp=4, dtype="bf16", zero_stage=0)
    assert bf[0]["optimizer"] == 12 * params // 4


def test_the_peak_moment_decides_what_is_live(make_profile):
    profile = make_profile(blocks=8)
    # Megatron's main_grad buffer lives throughout: the peak is the first backward with every gradient
    _, _, mg = _mem(profile, pp=2, num_microbatches=4, target="megatron")
    states = _states(profile, pp=2, num_microbatches=4, target="megatron")
    assert mg[0]["gradients"] == states[0]["gradients"]
    # DeepSpeed frees .grad after each step. pp 2, m 2, stage 0 (F0 F1 B0 B1): its first backward holds 2 units
    # and no gradient, its second 1 unit and every gradient; the larger is the peak
    for mbs in (1, 8):
        _, _, ds = _mem(profile, pp=2, num_microbatches=2, micro_batch_size=mbs, dtype="fp32")
        grads = _states(profile, pp=2, num_microbatches=2, micro_batch_size=mbs, dtype="fp32")[0]["gradients"]
        got = ds[0]
        first = got["gradients"] == 0
        assert first or got["gradients"] == grads
        kept = got["activations"] // 2 if first else got["activations"]
        assert (kept >= grads) == first, (mbs, kept, grads)
    # one micro-batch: the first backward has no gradient, the reduction no activation
    _, _, one = _mem(profile, pp=1, num_microbatches=1, dtype="fp32")
    assert (one[0]["gradients"] == 0) != (one[0]["activations"] == 0)


def test_framework_parts_depend_on_the_device(make_profile):
    profile = make_profile(blocks=4)
    _, _, one = _mem(profile, pp=1)
    tensors = sum(one[0][p] for p in TENSOR_PARTS)
    assert one[0]["cuda_context"] == CUDA_CONTEXT_BYTES and one[0]["nccl_buffers"] == 0  # one GPU: no communicator
    assert one[0]["allocator_slack"] == round(ALLOCATOR_SLACK_FRACTION * tensors)
    _, _, two = _mem(profile, pp=1, dp=2)
    assert two[0]["nccl_buffers"] == NCCL_BUFFER_BYTES
    _, _, cpu = _mem(profile, cluster="local-cpu", pp=1, dp=2)
    assert all(cpu[0][p] == 0 for p in FRAMEWORK_PARTS)  # a host CPU has no CUDA context, NCCL or caching allocator
    assert [cpu[0][p] for p in TENSOR_PARTS] == [two[0][p] for p in TENSOR_PARTS]


def test_zero_buckets_and_the_reduction_copy(make_profile):
    profile = make_profile(blocks=4)
    # ZeRO-1 under the pipeline engine: setup_buckets' buffer and the one reduce_gradients appends
    assert bucket_bytes(ParallelConfig(dtype="fp32", zero_stage=1, pp=2)) == 2 * 4 * DS_REDUCE_BUCKET_ELEMENTS
    assert bucket_bytes(ParallelConfig(dtype="fp16", zero_stage=2, pp=1)) == 2 * DS_REDUCE_BUCKET_ELEMENTS  # plain
    assert bucket_bytes(ParallelConfig(dtype="bf16", zero_stage=1)) == 0  # BF16_Optimizer's flat buffers
    assert bucket_bytes(ParallelConfig(dtype="fp16", zero_stage=1, target="megatron")) == 0
    _, _, z1 = _mem(profile, pp=1, dp=2, dtype="fp32", zero_stage=1)
    assert z1[0]["comm_buckets"] == 2 * 4 * DS_REDUCE_BUCKET_ELEMENTS
    assert z1[0]["gradients"] == 0  # at the reduction they are copies inside the buckets (contiguous_gradients)
    # ZeRO 0: the flat copy of the gradients the reduction makes counts where it exceeds the freed activations
    _, _, z0 = _mem(profile, pp=1, dp=2, dtype="fp32", micro_batch_size=1)
    backward = z0[0]["activations"] + z0[0]["recompute_working"] + z0[0]["logits"]
    assert z0[0]["comm_buckets"] == max(0, z0[0]["gradients"] - backward)
    _, _, mg = _mem(profile, pp=1, dp=2, dtype="fp32", micro_batch_size=1, target="megatron")
    assert mg[0]["comm_buckets"] == 0


def test_inflight_per_schedule():
    one = ParallelConfig(pp=4, num_microbatches=8, target="megatron")
    assert [inflight_units(one, s) for s in range(4)] == [4, 3, 2, 1]
    assert inflight_units(one.replace(num_microbatches=2), 0) == 2
    assert inflight_units(one.replace(schedule="gpipe"), 3) == 8
    assert inflight_units(one.replace(schedule="zb_h1"), 0) == 4
    inter = one.replace(schedule="interleaved_1f1b", vpp=2)
    assert [inflight_units(inter, s) for s in range(4)] == [11, 9, 7, 5]


def test_activations_follow_the_schedule(make_profile):
    profile = make_profile(blocks=8)
    table, bounds, mem = _mem(profile, pp=4, num_microbatches=8, target="megatron")
    per_mb = sum(table.saved_bytes[bounds[0]:bounds[1]])
    assert mem[0]["activations"] == 4 * per_mb and mem[3]["activations"] == 1 * per_mb
    _, _, gpipe = _mem(profile, pp=4, num_microbatches=8, target="megatron", schedule="gpipe")
    assert gpipe[3]["activations"] == 8 * per_mb


def test_recompute_keeps_inputs_plus_a_working_set(make_profile):
    profile = make_profile(blocks=8)
    table, bounds, none = _mem(profile, pp=2, num_microbatches=4, target="megatron")
    _, _, full = _mem(profile, pp=2, num_microbatches=4, target="megatron", recompute="full")
    _, _, every2 = _mem(profile, pp=2, num_microbatches=4, target="megatron", recompute="every:2")
    _, _, sel = _mem(profile, pp=2, num_microbatches=4, target="megatron", recompute="selective")
    first, last = bounds[1], bounds[2]  # stage 1: 2 in flight
    inputs = sum(table.output_bytes[i - 1] for i in range(first, last))
    assert full[1]["activations"] == 1 * inputs
    assert full[1]["recompute_working"] == max(table.saved_bytes[first:last])
    assert every2[1]["activations"] == sum(table.output_bytes[i - 1] for i in range(first, last, 2))
    assert every2[1]["recompute_working"] == sum(table.saved_bytes[first:first + 2])
    assert every2[1]["activations"] < full[1]["activations"] < none[1]["activations"]
    assert every2[1]["recompute_working"] > full[1]["recompute_working"]
    assert sel[1]["activations"] < none[1]["activations"]  # unfused attention scores are dropped


def test_deepspeed_holds_stage_outputs(make_profile):
    profile = make_profile(blocks=8)
    table, bounds, ds = _mem(profile, pp=2, num_microbatches=4, dtype="fp32")  # peaks in a backward
    _, _, mg = _mem(profile, pp=2, num_microbatches=4, target="megatron", dtype="fp32")
    assert ds[0]["activations"] - mg[0]["activations"] == 2 * table.output_bytes[bounds[1] - 1]
    assert ds[1]["activations"] == mg[1]["activations"]  # the last stage sends nothing


def test_last_stage_holds_logits_and_the_tied_copy(make_profile):
    profile = make_profile(blocks=6, edge_ms=0.1, tied=True)
    table, _, mem = _mem(profile, pp=2, num_microbatches=4, target="megatron")
    assert mem[0]["logits"] == 0
    one = round(table.output_bytes[-1] * 4 / 2)  # analytic-like source: one fp32 copy
    assert mem[1]["logits"] == one == logits_bytes(table, "megatron", 4)
    # DeepSpeed's pipeline engine keeps this micro-batch's logits and the previous one's, and the cross-entropy
    # backward holds two more
    assert logits_bytes(table, "deepspeed", 4) == 4 * one and logits_bytes(table, "deepspeed", 1) == 3 * one
    emb = profile.layers[0].param_count
    own = sum(layer.param_count for layer in profile.layers[4:])
    assert _states(profile, pp=2, num_microbatches=4)[1]["weights"] == 2 * (own + emb)
    assert _states(profile, pp=1)[0]["weights"] == 2 * profile.param_count


def test_adam_temporaries_over_flat_partitions():
    assert step_working_share(ParallelConfig(dtype="bf16")) == 8 / 12  # BF16_Optimizer: 2 fp32 temporaries
    assert step_working_share(ParallelConfig(dtype="fp32", zero_stage=1)) == 8 / 16
    assert step_working_share(ParallelConfig(dtype="fp32")) == 0  # stepped parameter by parameter
    assert step_working_share(ParallelConfig(dtype="bf16", target="megatron")) == 0


def test_margin_and_headroom():
    from pptune.cost.memory import check_headroom, memory_margin, with_memory_headroom
    from pptune.errors import ConfigError

    assert memory_margin(30 * 2**30, 80 * 2**30) == "fits with 50.00 GiB to spare"
    assert memory_margin(78 * 2**30, 80 * 2**30, 4.0) == "needs 2.00 GiB more (keeping 4 GiB free)"
    for bad in (-1.0, float("nan"), 80.0):
        with pytest.raises(ConfigError, match="--memory-headroom"):
            check_headroom(bad, 80.0)
    cluster = load_cluster("a100-80g", num_gpus=2)
    assert with_memory_headroom(cluster, 0.0) is cluster
    assert with_memory_headroom(cluster, 6.0).gpu.memory_gib == cluster.gpu.memory_gib - 6.0
