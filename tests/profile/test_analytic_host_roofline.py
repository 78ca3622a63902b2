"""Checks the analytic profile's host-launch floor, GEMM roofline and gradient-accumulation traffic."""

from __future__ import annotations

import dataclasses

import pytest

from pptune.hardware import GPU_PRESETS
from pptune.model.spec import parse_spec
from pptune.profile.analytic import analytic_profile, gemm_ms, gemm_shape_ms, memory_ms, overlap_ms
from pptune.profile.flops import Gemm, block_work, grad_accumulate_bytes

A100 = GPU_PRESETS["A100-SXM4-80GB"]
NO_HOST = dataclasses.replace(A100, launch_overhead_us=0.0)
TINY = parse_spec("gpt:layers=2,hidden=256,heads=4,seq=128,vocab=1000")


def test_overlap_is_a_smooth_maximum() -> None:
    assert overlap_ms(0.0, 3.0) == 3.0 and overlap_ms(3.0, 0.0) == 3.0
    assert 3.0 < overlap_ms(3.0, 3.0) < 3.6  # 2^(1/4) x 3 when both are equal
    assert overlap_ms(1.0, 10.0) == pytest.approx(10.0, rel=1e-3)


def test_tiny_layers_are_host_bound() -> None:
    work = block_work(TINY, b=1, s=128, tp=1, dtype="bf16", sequence_parallel=False, flash=False)
    p_host = analytic_profile(TINY, A100, micro_batch_sizes=(1,), flash_attention=False)
    p_gpu = analytic_profile(TINY, NO_HOST, micro_batch_sizes=(1,), flash_attention=False)
    host_fwd = work.fwd_ops * A100.launch_overhead_us / 1e3
    t_host, t_gpu = p_host.layers[1].timing(1), p_gpu.layers[1].timing(1)
    assert t_gpu.fwd_ms < 0.25 * host_fwd  # the kernels themselves are far shorter than launching them
    assert host_fwd <= t_host.fwd_ms <= host_fwd * 1.01
    assert work.bwd_ops > 2 * work.fwd_ops  # two kernels per op plus one gradient accumulation per tensor


def test_tp_collectives_add_launches() -> None:
    one = block_work(TINY, b=1, s=128, tp=1, dtype="bf16", sequence_parallel=False, flash=True)
    two = block_work(TINY, b=1, s=128, tp=2, dtype="bf16", sequence_parallel=False, flash=True)
    assert (two.fwd_ops - one.fwd_ops, two.bwd_ops - one.bwd_ops) == (2, 2)


def test_roofline_makes_the_unfused_attention_memory_bound() -> None:
    scores = Gemm(m=1024, k=64, n=1024, batch=512)  # a head's [s, d] x [d, s]; 64 heads x 8 sequences
    assert scores.flops == 2 * 1024 * 64 * 1024 * 512
    assert gemm_shape_ms(scores, A100, "bf16") == pytest.approx(memory_ms(scores.bytes(2), A100))
    big = Gemm(m=8192, k=8192, n=8192)
    assert gemm_shape_ms(big, A100, "bf16") == pytest.approx(gemm_ms(big.flops, A100, "bf16"))
    dgrad, wgrad = big.grads()
    assert dgrad.flops == wgrad.flops == big.flops


def test_weight_gradients_accumulate_in_fp32() -> None:
    spec = parse_spec("gpt:layers=2,hidden=1024,heads=16,seq=1024,vocab=1000")
    work = block_work(spec, b=1, s=1024, tp=2, dtype="fp16", sequence_parallel=False, flash=True)
    weights = 12 * 1024 * 1024 / 2  # QKV, projection and the two MLP GEMMs on one of two ranks
    assert work.bwd_bytes - 2 * work.fwd_bytes == pytest.approx(grad_accumulate_bytes(weights, 2))
    assert grad_accumulate_bytes(1, 2) == 10  # read the 16-bit gradient, read and write the fp32 buffer
