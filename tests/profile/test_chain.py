"""The in-sequence factor: whole-chain time over the summed one-at-a-time times, applied to every timing."""

from __future__ import annotations

import pytest
import torch

import pptune.profile.measure as measure
from pptune.model.resolve import load_model_layers
from pptune.profile.chain import chain_scale
from pptune.profile.measure import profile_model

TINY = "gpt:layers=3,hidden=64,heads=2,vocab=128,seq=32"


class FixedTimer:
    """Every call 'takes' ``ms`` (the call still runs)."""

    def __init__(self, ms: float) -> None:
        self.ms = ms

    def time(self, fn):
        return fn(), self.ms


def test_factors_are_chain_over_sum_and_gradients_are_dropped():
    model = load_model_layers(TINY, 16)
    tokens = torch.randint(0, model.vocab_size, (2, 16))
    got = chain_scale(model.layers, tokens, loss_fn=model.loss_fn, timer=FixedTimer(3.0), fwd_sum_ms=1.5,
                      bwd_sum_ms=6.0, micro_batch_size=2)
    assert (got.micro_batch_size, got.fwd_scale, got.bwd_scale) == (2, 2.0, 0.5)
    assert all(p.grad is None for layer in model.layers for p in layer.parameters())


def test_profile_timings_carry_the_factor(monkeypatch):
    """With every timed call 1 ms, a layer alone takes 1 ms and the 5-layer chain 1 ms: each timing becomes 1/5."""
    monkeypatch.setattr(measure, "make_timer", lambda dev: FixedTimer(1.0))
    p = profile_model(TINY, seq_len=16, micro_batch_sizes=[1, 2], warmup=5, repeat=2, progress=False, threads=1)
    assert [(f.micro_batch_size, f.fwd_scale, f.bwd_scale) for f in p.in_sequence] == [(1, 0.2, 0.2), (2, 0.2, 0.2)]
    for layer in p.layers:
        for t in layer.timings:
            assert (t.fwd_ms, t.bwd_ms) == (pytest.approx(0.2), pytest.approx(0.2))
