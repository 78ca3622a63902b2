"""Fit the analytic model's GPU constants from a measured GEMM / memory sweep on the GPU itself (torch-free).

``pptune.calibrate.gpu_sweep`` (run as ``benchmarks/gpu_sweep.py``) times GEMMs of transformer shapes and large
elementwise copies on a lent GPU and calls these fits; the constants are the ones ``pptune.profile.analytic`` uses:

- GEMM time ``t(F) = (F + F_half) / (peak * E)`` is linear in the FLOPs ``F``: a least-squares line
  ``t = a F + b`` (weighted by ``1 / t``, i.e. relative error) gives ``E = 1 / (peak * a)`` (the plateau,
  ``matmul_efficiency``) and ``F_half = b / a`` (``matmul_half_flops``).
- Memory-bound work moves ``bytes`` in ``bytes / (hbm * memory_efficiency)``: the median achieved bandwidth of
  the large copies over the datasheet HBM bandwidth.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from pptune.errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class GemmFit:
    """The GEMM plateau and half-size fitted to measured (FLOPs, ms) points."""

    matmul_efficiency: float  # achieved / dense peak for large GEMMs
    matmul_half_flops: float  # FLOPs at which a GEMM reaches half the plateau
    max_rel_error: float  # largest |model / measured - 1| over the points
    points: int


def fit_gemm(flops: Sequence[float], times_ms: Sequence[float], *, peak_tflops: float) -> GemmFit:
    """Fit ``t = (F + F_half) / (peak * E)`` to measured GEMMs (weighted least squares on relative error).

    Raises:
        ConfigError: fewer than 3 points, non-positive values, or a fit without a positive slope.
    """
    if len(flops) != len(times_ms) or len(flops) < 3:
        raise ConfigError(f"a GEMM fit needs at least 3 (flops, ms) points, got {len(flops)} and {len(times_ms)}")
    if min(flops) <= 0 or min(times_ms) <= 0 or peak_tflops <= 0:
        raise ConfigError("GEMM FLOPs, times and the peak must be positive")
    # minimise sum(((a F + b) / t - 1)^2): linear least squares in (a, b) with rows (F / t, 1 / t) and target 1
    sxx = sum((f / t) ** 2 for f, t in zip(flops, times_ms, strict=True))
    sxy = sum((f / t) * (1 / t) for f, t in zip(flops, times_ms, strict=True))
    syy = sum((1 / t) ** 2 for t in times_ms)
    rx = sum(f / t for f, t in zip(flops, times_ms, strict=True))
    ry = sum(1 / t for t in times_ms)
    det = sxx * syy - sxy * sxy
    if det <= 0:
        raise ConfigError("GEMM fit is singular: the sweep needs GEMMs of different sizes")
    a = (rx * syy - ry * sxy) / det  # ms per FLOP
    b = (sxx * ry - sxy * rx) / det  # ms
    if a <= 0:
        raise ConfigError("GEMM fit has no positive slope: larger GEMMs were not slower (timing failed?)")
    b = max(b, 0.0)
    efficiency = 1.0 / (peak_tflops * 1e12 * a / 1e3)
    errors = [abs((a * f + b) / t - 1) for f, t in zip(flops, times_ms, strict=True)]
    return GemmFit(matmul_efficiency=efficiency, matmul_half_flops=b / a, max_rel_error=max(errors), points=len(flops))


def memory_efficiency(nbytes: Sequence[float], times_ms: Sequence[float], *, hbm_gbps: float) -> float:
    """Median achieved bandwidth of memory-bound kernels over the datasheet HBM bandwidth."""
    if not nbytes or len(nbytes) != len(times_ms) or hbm_gbps <= 0 or min(times_ms) <= 0:
        raise ConfigError("memory fit needs matching positive (bytes, ms) points and a positive HBM bandwidth")
    return statistics.median(n / (t / 1e3) / 1e9 for n, t in zip(nbytes, times_ms, strict=True)) / hbm_gbps
