"""The dense peak of one core of this host's CPU, from what ``/proc/cpuinfo`` states (torch-free).

MFU divides achieved FLOP/s by the device's peak; on the ``local-cpu`` preset a rank is one core, so its
peak is one core's: FLOPs per cycle of its widest multiply-add units times its clock. Per cycle and core:

- fp32: AVX-512 (``avx512f``) 16 lanes x 2 (FMA) x 2 units = 64; AVX2 with FMA 8 x 2 x 2 = 32; AVX alone
  (separate add and multiply ports) 8 x 2 = 16; SSE 4 x 2 = 8.
- bf16: AMX (``amx_bf16``) 1024 (Intel: one AMX unit per core does 1,024 BF16 operations per cycle, "Intel
  AMX" overview, https://www.intel.com/content/www/us/en/products/docs/accelerator-engines/advanced-matrix-extensions/overview.html);
  AVX512-BF16 (``avx512_bf16``, VDPBF16PS: 32 bf16 pairs per 512-bit register) 32 x 2 x 2 units = 128; else
  the fp32 figure (torch converts bf16 to fp32 for its GEMMs on such CPUs, and is slower, never faster).
- fp16: AMX-FP16 (``amx_fp16``) 1024; AVX512-FP16 (``avx512_fp16``) 32 lanes x 2 x 2 = 128; else fp32's.

Two FMA units per core is the upper figure (some parts have one): a peak is an upper bound, so MFU on a
real core stays below 100%. The clock is the highest ``cpuinfo_max_freq`` in ``/sys`` when the kernel
exposes it (turbo included), else the highest ``cpu MHz`` of ``/proc/cpuinfo`` (a VM's nominal clock).
Without cpufreq (a VM), ``cpu MHz`` is the base clock, which a core exceeds under turbo: on this project's Intel
Xeon VM (``cpu MHz`` 2600) one fp32 thread ran a 1024^3 GEMM at 173 GFLOP/s, above 64 x 2.6 GHz = 166. So a clock
read from ``cpu MHz`` is raised to ``TURBO_BOUND_GHZ``, the highest single-core turbo of current server parts
(Xeon Platinum 8480+: 3.8 GHz; EPYC 9654: 3.7 GHz boost; vendors' product pages), and a peak stays an upper bound.
A host whose CPU cannot be read (not Linux) gets ``FALLBACK``: AVX-512 at 3.5 GHz, above most cores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
CPUFREQ_GLOB = "/sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq"  # kHz
TURBO_BOUND_GHZ = 3.8  # a base clock from ``cpu MHz`` is raised to this (see the module docstring)


@dataclass(frozen=True, kw_only=True, slots=True)
class CpuPeak:
    """Dense peak of one core (TFLOP/s) and what it was derived from."""

    fp32_tflops: float
    bf16_tflops: float
    fp16_tflops: float
    source: str  # e.g. "Intel(R) Xeon(R) Processor: avx512f, amx_bf16 at 2.60 GHz (/proc/cpuinfo)"


FALLBACK = CpuPeak(fp32_tflops=64 * 3.5e9 / 1e12, bf16_tflops=64 * 3.5e9 / 1e12, fp16_tflops=64 * 3.5e9 / 1e12,
                   source="CPU not readable: assumed AVX-512 (64 fp32 FLOP/cycle) at 3.5 GHz")


def _fp32_per_cycle(flags: set[str]) -> tuple[int, str]:
    if "avx512f" in flags:
        return 64, "avx512f"
    if "avx2" in flags and "fma" in flags:
        return 32, "avx2+fma"
    if "avx" in flags:
        return 16, "avx"
    return 8, "sse"


def _half_per_cycle(flags: set[str], amx: str, vector: str, fp32: int) -> tuple[int, str | None]:
    if amx in flags:
        return 1024, amx
    if vector in flags:
        return 128, vector
    return fp32, None


def parse_cpuinfo(text: str, max_freq_khz: float | None = None) -> CpuPeak | None:
    """The per-core peak stated by a ``/proc/cpuinfo`` text (None when it names no flags or no clock)."""
    flags_line = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.MULTILINE)
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.MULTILINE)]
    ghz = max_freq_khz / 1e6 if max_freq_khz else (max(max(mhz) / 1e3, TURBO_BOUND_GHZ) if mhz else None)
    if flags_line is None or not ghz:
        return None
    flags = set(flags_line.group(1).split())
    fp32, fp32_kind = _fp32_per_cycle(flags)
    bf16, bf16_kind = _half_per_cycle(flags, "amx_bf16", "avx512_bf16", fp32)
    fp16, fp16_kind = _half_per_cycle(flags, "amx_fp16", "avx512_fp16", fp32)
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
    kinds = ", ".join(dict.fromkeys(k for k in (fp32_kind, bf16_kind, fp16_kind) if k))
    clock = "cpuinfo_max_freq" if max_freq_khz else f"cpu MHz {max(mhz):.0f}, raised to the turbo bound"
    return CpuPeak(fp32_tflops=fp32 * ghz / 1e3, bf16_tflops=bf16 * ghz / 1e3, fp16_tflops=fp16 * ghz / 1e3,
                   source=f"{model.group(1).strip() if model else 'CPU'}: {kinds} at {ghz:.2f} GHz ({clock})")


def _max_freq_khz() -> float | None:
    values = []
    for path in Path("/").glob(CPUFREQ_GLOB.lstrip("/")):
        try:
            values.append(float(path.read_text().strip()))
        except (OSError, ValueError):
            continue
    return max(values) if values else None


def host_core_peak() -> CpuPeak:
    """This host's per-core peak (``FALLBACK`` when /proc/cpuinfo cannot be read or parsed)."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return FALLBACK
    return parse_cpuinfo(text, _max_freq_khz()) or FALLBACK
