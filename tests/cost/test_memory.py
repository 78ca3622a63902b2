"""Per-stage memory: model-state bytes per parameter and ZeRO, in-flight activations per schedule, recompute."""

from __future__ import annotations

from pptune.cost import estimate
from pptune.cost.layers import layer_table
from pptune.cost.memory import (
    MEMORY_PARTS,
    RESERVE_FIXED_BYTES,
    RESERVE_FRACTION,
    bytes_per_param,
    inflight_units,
)
from pptune.hardware import load_cluster
from pptune.parallel import ParallelConfig


def _mem(profile, **kw):
    """(layer table, boundaries, each stage's memory parts) of estimate() with DeepSpeed's uniform split."""
    config = ParallelConfig(partition="uniform", **kw)
    table = layer_table(profile, micro_batch_size=config.micro_batch_size, tp=config.tp, dtype=config.dtype)
    est = estimate(profile, load_cluster("a100-80g", num_gpus=config.world_size), config)  # fits: parts only
    parts = [stage.memory_parts_bytes for stage in est.stages]
    assert all(list(p) == list(MEMORY_PARTS) for p in parts)
    assert [sum(p.values()) for p in parts] == list(est.memory_per_stage_bytes)
    return table, est.boundaries, parts


def test_bytes_per_parameter():
    assert bytes_per_param(ParallelConfig(dtype="fp32")) == (4, 4, 8)
    assert bytes_per_param(ParallelConfig(dtype="bf16")) == (2, 6, 12)  # bf16 .grad + fp32 accumulation
    assert bytes_per_param(ParallelConfig(dtype="fp16")) == (2, 2, 12)
    assert bytes_per_param(ParallelConfig(dtype="bf16", target="megatron")) == (2, 4, 12)


def test_model_states_and_zero(make_profile):
    profile = make_profile(blocks=8)
    params = sum(layer.param_count for layer in profile.layers[:4])
    _, _, mem = _mem(profile, pp=2, dp=4, dtype="fp16", zero_stage=0)
    assert mem[0]["weights"] == 2 * params and mem[0]["gradients"] == 2 * params
    assert mem[0]["optimizer"] == 12 * params  # fp16 without ZeRO keeps every optimizer state
    _, _, z1 = _mem(profile, pp=2, dp=4, dtype="fp16", zero_stage=1)
    assert z1[0]["optimizer"] == 12 * params // 4 and z1[0]["gradients"] == 2 * params
    _, _, z2 = _mem(profile, pp=1, dp=4, dtype="fp16", zero_stage=2)
    _, _, z3 = _mem(profile, pp=1, dp=4, dtype="fp16", zero_stage=3)
    all_params = profile.param_count
    assert z2[0]["gradients"] == 2 * all_params // 4 and z2[0]["weights"] == 2 * all_params
    assert z3[0]["weights"] == 2 * all_params // 4
    # DeepSpeed's BF16_Optimizer splits the fp32 states over DP even at ZeRO 0
    _, _, bf = _mem(profile, pp=2, dp=4, dtype="bf16", zero_stage=0)
    assert bf[0]["optimizer"] == 12 * params // 4


def test_reserve_is_fixed_plus_a_share(make_profile):
    _, _, mem = _mem(make_profile(blocks=4), pp=1)
    parts = dict(mem[0])
    reserve = parts.pop("reserve")
    assert reserve == RESERVE_FIXED_BYTES + round(RESERVE_FRACTION * sum(parts.values()))


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
    table, bounds, ds = _mem(profile, pp=2, num_microbatches=4)
    _, _, mg = _mem(profile, pp=2, num_microbatches=4, target="megatron")
    assert ds[0]["activations"] - mg[0]["activations"] == 2 * table.output_bytes[bounds[1] - 1]
    assert ds[1]["activations"] == mg[1]["activations"]  # the last stage sends nothing


def test_last_stage_holds_logits_and_the_tied_copy(make_profile):
    profile = make_profile(blocks=6, edge_ms=0.1, tied=True)
    table, _, mem = _mem(profile, pp=2, num_microbatches=4)
    assert mem[0]["logits"] == 0
    assert mem[1]["logits"] == round(table.output_bytes[-1] * 4 / 2)  # analytic-like source: one fp32 copy
    emb = profile.layers[0].param_count
    own = sum(layer.param_count for layer in profile.layers[4:])
    assert mem[1]["weights"] == 2 * (own + emb)
    _, _, single = _mem(profile, pp=1)
    assert single[0]["weights"] == 2 * profile.param_count
