"""The local-cpu preset's peak is one core of this host's, so a real one-thread GEMM stays below it (MFU < 100%)."""

from __future__ import annotations

import time

import pytest
import torch

from pptune.cpu_peak import FALLBACK, parse_cpuinfo
from pptune.hardware import load_cluster

SPR = """processor	: 0
model name	: Intel(R) Xeon(R) Platinum 8480+
cpu MHz		: 2000.000
flags		: fpu sse sse2 avx fma avx2 avx512f avx512_bf16 amx_bf16 amx_tile avx512_fp16
processor	: 1
cpu MHz		: 2100.000
"""
ZEN2 = "model name	: AMD EPYC 7B12\ncpu MHz		: 2250.000\nflags		: fpu sse sse2 avx fma avx2\n"


def test_parse_cpuinfo_stated_peaks():
    spr = parse_cpuinfo(SPR)
    # a base clock from cpu MHz (highest 2100) is raised to the turbo bound: cores exceed it under turbo
    assert spr is not None and "3.80 GHz" in spr.source and "2100" in spr.source and "Platinum 8480+" in spr.source
    assert spr.fp32_tflops == pytest.approx(64 * 3.8e9 / 1e12)
    assert spr.bf16_tflops == pytest.approx(1024 * 3.8e9 / 1e12)  # AMX
    assert spr.fp16_tflops == pytest.approx(128 * 3.8e9 / 1e12)  # AVX512-FP16, no AMX-FP16
    fast = parse_cpuinfo(SPR.replace("2100.000", "4200.000"))  # a stated clock above the bound is kept
    assert fast is not None and fast.fp32_tflops == pytest.approx(64 * 4.2e9 / 1e12)
    zen = parse_cpuinfo(ZEN2, max_freq_khz=3.3e6)  # turbo from cpufreq wins over cpu MHz
    assert zen is not None and zen.fp32_tflops == pytest.approx(32 * 3.3e9 / 1e12)
    assert zen.bf16_tflops == zen.fp32_tflops == zen.fp16_tflops  # no bf16 units: the fp32 rate
    assert parse_cpuinfo("processor : 0\n") is None and FALLBACK.fp32_tflops > 0


def _gemm_tflops(dtype: torch.dtype, n: int = 1024, repeat: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


@pytest.mark.parametrize("dtype, name", [(torch.float32, "fp32"), (torch.bfloat16, "bf16")])
def test_one_thread_gemm_stays_below_the_local_cpu_peak(dtype, name):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a rank of a local-cpu run
    try:
        achieved = _gemm_tflops(dtype)
    finally:
        torch.set_num_threads(before)
    peak = load_cluster("local-cpu").gpu.peak_tflops(name)
    assert achieved < peak, f"one thread did {achieved * 1e3:.0f} GFLOP/s in {name}, above the {peak * 1e3:.0f} stated"
