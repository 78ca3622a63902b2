"""The backward split the profiler measures: B (input gradient, parameters frozen) + W (the rest) = bwd_ms per layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pptune.profile.measure import profile_model
from pptune.profile.measure_layer import measure_layer
from pptune.profile.timing import CpuTimer

FAST = {"warmup": 3, "repeat": 7}


def _measure(layer: nn.Module, x: torch.Tensor):
    torch.manual_seed(0)
    return measure_layer(layer.train(), x, micro_batch_size=1, timer=CpuTimer(), **FAST).timing


def test_split_adds_up_and_the_weight_part_is_a_gemm_share():
    # Two 256 x 256 linears on 1,024 tokens: the backward is two GEMMs per linear (dX and dW), the same FLOPs,
    # so W is a real share of it, away from 0 and from the whole backward (loose bounds: the host is contended).
    torch.set_num_threads(1)
    t = _measure(nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256)), torch.randn(1024, 256))
    assert t.bwd_input_ms is not None and t.bwd_weight_ms is not None
    assert t.bwd_input_ms + t.bwd_weight_ms == pytest.approx(t.bwd_ms, rel=1e-9)
    assert 0.05 * t.bwd_ms < t.bwd_weight_ms < 0.95 * t.bwd_ms


def test_the_parameters_are_restored_and_gradients_dropped():
    layer = nn.Linear(32, 32)
    _measure(layer, torch.randn(64, 32))
    assert all(p.requires_grad and p.grad is None for p in layer.parameters())


def test_token_ids_have_no_input_gradient_and_a_parameterless_layer_no_weight_gradient():
    emb = _measure(nn.Embedding(100, 32), torch.randint(0, 100, (4, 16)))
    assert emb.bwd_input_ms == 0.0 and emb.bwd_weight_ms == emb.bwd_ms
    act = _measure(nn.GELU(), torch.randn(64, 256))
    assert act.bwd_weight_ms == 0.0 and act.bwd_input_ms == act.bwd_ms


def test_a_profile_stores_the_split_for_every_layer():
    profile = profile_model("gpt:layers=1,hidden=64,heads=2,vocab=128,seq=32", seq_len=16, micro_batch_sizes=[1],
                            progress=False, threads=1, warmup=5, repeat=2)
    assert profile.schema_version == 2
    for layer in profile.layers:
        t = layer.timings[0]
        assert t.bwd_input_ms is not None and t.bwd_input_ms + t.bwd_weight_ms == pytest.approx(t.bwd_ms)
    assert profile.layers[0].timings[0].bwd_input_ms == 0.0  # the embedding's backward is all weight gradient
