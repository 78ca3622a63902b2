"""The per-layer cost table: re-sharding a profile to another tp and sequence parallelism, checked against analytic profiles."""

from __future__ import annotations

import pytest

from pptune.cost.layers import layer_table
from pptune.hardware import GPU_PRESETS
from pptune.model.spec import PRESETS
from pptune.profile.analytic import analytic_profile

H100 = GPU_PRESETS["H100-SXM5-80GB"]


def test_table_is_kept_per_profile_content_and_shape(make_profile):
    import dataclasses

    from pptune.cost.cache import CostCache

    cache = CostCache()
    profile = make_profile(blocks=4)
    a = layer_table(profile, micro_batch_size=2, tp=1, dtype="bf16", cache=cache)
    assert layer_table(profile, micro_batch_size=2, tp=1, dtype="bf16", cache=cache) is a
    assert layer_table(profile, micro_batch_size=4, tp=1, dtype="bf16", cache=cache) is not a
    twin = dataclasses.replace(profile)  # an equal profile, another object: the same entry
    assert layer_table(twin, micro_batch_size=2, tp=1, dtype="bf16", cache=cache) is a
    slower = dataclasses.replace(profile, layers=(dataclasses.replace(profile.layers[0], param_count=7),
                                                  *profile.layers[1:]))
    assert layer_table(slower, micro_batch_size=2, tp=1, dtype="bf16", cache=cache) is not a
    assert layer_table(profile, micro_batch_size=2, tp=1, dtype="bf16") is not a  # no cache: built for the call
    assert a.fwd_ms[0] == pytest.approx(2.0)  # 1 ms per sample, linear in the micro-batch size


@pytest.mark.parametrize("flash", [True, False])
def test_resharding_a_tp1_profile_approximates_the_tp4_profile(flash):
    spec = PRESETS["gpt3-1.3b"]
    one = analytic_profile(spec, H100, tp=1, micro_batch_sizes=(2,), flash_attention=flash)
    four = analytic_profile(spec, H100, tp=4, micro_batch_sizes=(2,), flash_attention=flash)
    got = layer_table(one, micro_batch_size=2, tp=4, dtype="bf16")
    want = layer_table(four, micro_batch_size=2, tp=4, dtype="bf16")
    block = 1
    assert got.saved_bytes[block] == pytest.approx(want.saved_bytes[block], rel=0.02)
    assert got.param_count[block] == pytest.approx(want.param_count[block], rel=0.01)
    assert got.output_bytes[block] == want.output_bytes[block]
    head = got.head_index
    assert got.output_bytes[head] == pytest.approx(want.output_bytes[head], rel=0.01)
    # Times: linear scaling is the documented approximation (small GEMMs lose efficiency at tp=4)
    assert got.fwd_ms[block] == pytest.approx(one.layers[block].timings[0].fwd_ms / 4)
    # Selective recompute drops the attention scores only when the layer saved them
    if flash:
        assert got.attn_saved_bytes[block] < 0.01 * got.saved_bytes[block]
    else:
        a, s, b = spec.num_heads, spec.seq_len, 2
        assert got.attn_saved_bytes[block] == pytest.approx(a * s * s * b * 5 / 4, rel=0.02)


def test_sequence_parallel_profile_and_config_agree():
    spec = PRESETS["gpt3-1.3b"]
    plain = analytic_profile(spec, H100, tp=2, micro_batch_sizes=(1,))
    sp = analytic_profile(spec, H100, tp=2, micro_batch_sizes=(1,), sequence_parallel=True)
    from_plain = layer_table(plain, micro_batch_size=1, tp=2, dtype="bf16", sequence_parallel=True)
    from_sp = layer_table(sp, micro_batch_size=1, tp=2, dtype="bf16", sequence_parallel=True)
    no_sp = layer_table(sp, micro_batch_size=1, tp=2, dtype="bf16", sequence_parallel=False)
    assert from_plain.output_bytes[1] == from_sp.output_bytes[1] == no_sp.output_bytes[1] // 2
    assert from_plain.saved_bytes[1] == pytest.approx(from_sp.saved_bytes[1], rel=0.01)
    assert no_sp.saved_bytes[1] > from_sp.saved_bytes[1]


def test_tied_embedding_copy(make_profile):
    table = layer_table(make_profile(blocks=4, edge_ms=0.1, tied=True), micro_batch_size=1, tp=1, dtype="bf16")
    emb, head = table.embedding_index, table.head_index
    assert table.tied_param_count == table.param_count[emb] > 0
    assert table.tied_copy_on(head - 1, head + 1) == table.tied_param_count
    assert table.tied_copy_on(0, head + 1) == 0  # embedding and head on one stage: one module
    untied = layer_table(make_profile(blocks=4, edge_ms=0.1), micro_batch_size=1, tp=1, dtype="bf16")
    assert untied.tied_param_count == 0


def test_selective_recompute_reads_the_profiles_attention_time():
    # An analytic profile knows its attention core's time (memory-bound when unfused); a profile without one
    # (measured, or written before the field) falls back to the attention's FLOP share s / (6h + s).
    import dataclasses

    spec = PRESETS["gpt3-1.3b"]
    profile = analytic_profile(spec, H100, tp=1, micro_batch_sizes=(2,), flash_attention=False)
    block = profile.layers[1].timings[0]
    got = layer_table(profile, micro_batch_size=2, tp=2, dtype="bf16")
    assert got.attn_fwd_ms[1] == pytest.approx(block.attn_fwd_ms / 2)  # re-sharded like the forward
    assert got.attn_fwd_ms[0] == got.attn_fwd_ms[got.head_index] == 0.0
    unknown = dataclasses.replace(profile, layers=tuple(
        dataclasses.replace(layer, timings=tuple(dataclasses.replace(t, attn_fwd_ms=0.0) for t in layer.timings))
        for layer in profile.layers))
    fallback = layer_table(unknown, micro_batch_size=2, tp=2, dtype="bf16")
    s, h = spec.seq_len, spec.hidden_size
    assert fallback.attn_fwd_ms[1] == pytest.approx(fallback.fwd_ms[1] * s / (6 * h + s))
    assert got.attn_fwd_ms[1] > 2 * fallback.attn_fwd_ms[1]
