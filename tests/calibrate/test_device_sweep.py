"""The GPU sweep's fits recover known constants, refuse bad input, and the sweep script runs (on the CPU here)."""

from __future__ import annotations

import json

import pytest

from pptune.calibrate.device_sweep import fit_gemm, memory_efficiency
from pptune.calibrate.gpu_sweep import main
from pptune.cpu_peak import host_core_peak
from pptune.errors import ConfigError
from pptune.hardware import GPU
from pptune.profile.analytic import gemm_ms


def test_gemm_fit_recovers_the_analytic_models_constants() -> None:
    gpu = GPU(name="x", peak_bf16_tflops=989, peak_fp16_tflops=989, peak_fp32_tflops=67, memory_gib=141,
              hbm_gbps=4800, matmul_efficiency=0.8, matmul_half_flops=3e9)
    flops = [2.0 * t * h * 4 * h for t in (512, 2048, 8192) for h in (1024, 4096)]
    times = [gemm_ms(f, gpu, "bf16") for f in flops]
    fit = fit_gemm(flops, times, peak_tflops=989)
    assert fit.matmul_efficiency == pytest.approx(0.8, rel=1e-9)
    assert fit.matmul_half_flops == pytest.approx(3e9, rel=1e-6)
    assert fit.max_rel_error < 1e-9 and fit.points == 6


def test_gemm_fit_weights_relative_error() -> None:
    # A 20% slow smallest GEMM: a fit on absolute error would ignore it (it is 1/1000 of the largest time); on
    # relative error it spreads it over the small GEMMs (half-size up from 1e9) and keeps the plateau near 0.8.
    flops = [1e9, 2e9, 4e9, 1e12, 2e12]
    times = [(f + 1e9) / (300e12 * 0.8) * 1e3 for f in flops]
    times[0] *= 1.2
    fit = fit_gemm(flops, times, peak_tflops=300)
    assert 0.78 < fit.matmul_efficiency < 0.84 and 1.1e9 < fit.matmul_half_flops < 1.5e9
    assert 0.05 < fit.max_rel_error < 0.1  # the outlier's error is shared, not left at 20%


@pytest.mark.parametrize(("flops", "times"), [([1e9, 2e9], [1.0, 2.0]), ([1e9, 2e9, -1.0], [1.0, 2.0, 3.0]),
                                              ([1e9, 1e9, 1e9], [1.0, 1.0, 1.0]), ([1e9, 2e9, 4e9], [3.0, 2.0, 1.0])])
def test_gemm_fit_refuses_what_it_cannot_fit(flops, times) -> None:
    with pytest.raises(ConfigError):
        fit_gemm(flops, times, peak_tflops=100)


def test_memory_efficiency_is_achieved_over_datasheet_bandwidth() -> None:
    # 2 GB moved in 1 ms = 2,000 GB/s on a 4,000 GB/s part
    assert memory_efficiency([2e9, 4e9], [1.0, 2.0], hbm_gbps=4000) == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        memory_efficiency([], [], hbm_gbps=4000)


def test_sweep_script_runs_on_the_cpu(tmp_path) -> None:
    out = tmp_path / "sweep.json"
    assert main(["--preset", "local-cpu", "--device", "cpu", "--quick", "--warmup", "1", "--repeat", "2",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dtype"] == "fp32" and len(report["gemms"]) == 16 and report["fitted"]["matmul_efficiency"] > 0
    assert report["preset_values"]["peak_tflops"] == host_core_peak().fp32_tflops and report["attention"][0]["fwd_ms"] > 0
    assert main(["--preset", "no-such-gpu", "--device", "cpu", "--quick", "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()
