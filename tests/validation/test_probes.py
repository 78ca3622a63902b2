"""This machine's probes for validation: the engine's per-parameter step work as a memory efficiency, and the
contended profile (several concurrent profilers, timings averaged layer by layer)."""

from __future__ import annotations

import dataclasses

import pytest

from pptune.cost.stage_terms import OPTIMIZER_BYTES_PER_PARAM
from pptune.testing.profiles import TINY, small_profile
from pptune.validation.contended import contended_profile, fastest_pass, mean_profile
from pptune.validation.engine_probe import engine_step_ms, memory_efficiency_for, model_parameters


def test_memory_efficiency_reproduces_the_measured_step() -> None:
    eff = memory_efficiency_for(10.0, 1_000_000, hbm_gbps=12.0)
    # The cost model's optimizer time at this efficiency: params * bytes / (bandwidth * efficiency).
    assert 1_000_000 * OPTIMIZER_BYTES_PER_PARAM["fp32"] / (12.0 * eff * 1e6) == pytest.approx(10.0)


def test_engine_step_runs_on_model_parameters() -> None:
    params = model_parameters(TINY, 32)
    assert sum(p.numel() for p in params) > 10_000
    ms = engine_step_ms(params, warmup=1, repeat=3)
    assert ms > 0 and all(p.grad is None for p in params)


def test_mean_profile_averages_same_layers() -> None:
    a = small_profile(block_ms=2.0)
    b = small_profile(block_ms=4.0)
    m = mean_profile([a, b], note="two copies")
    assert m.layers[1].timings[0].fwd_ms == pytest.approx(3.0) and m.layers[1].timings[0].bwd_ms == pytest.approx(6.0)
    assert m.layers[1].timings[0].saved_bytes == a.layers[1].timings[0].saved_bytes
    assert "two copies" in m.notes
    other = dataclasses.replace(b, micro_batch_sizes=(1,), layers=tuple(
        dataclasses.replace(layer, timings=layer.timings[:1]) for layer in b.layers))
    with pytest.raises((ValueError, IndexError)):
        mean_profile([a, other], note="")


def test_fastest_pass_keeps_each_layers_least_disturbed_timing() -> None:
    a = small_profile(block_ms=2.0, head_ms=9.0)
    b = small_profile(block_ms=3.0, head_ms=6.0)
    f = fastest_pass([a, b], note="2 passes")
    assert f.layers[1].timings[2] == a.layers[1].timings[2] and f.layers[-1].timings[2] == b.layers[-1].timings[2]
    assert f.notes.endswith("2 passes")


@pytest.mark.slow
def test_contended_profile_of_a_tiny_model() -> None:
    p = contended_profile(TINY, seq_len=32, micro_batch_sizes=(1, 2), copies=2, warmup=5, repeat=2)
    assert [layer.role for layer in p.layers] == ["embedding", "block", "block", "head"]
    assert p.threads == 1 and "2 concurrent" in p.notes
    assert all(t.fwd_ms > 0 and t.bwd_ms > 0 for layer in p.layers[1:] for t in layer.timings)
