"""The calibrated constants of the analytic A100 model, how they enter a Cluster, and the ones held fixed.

Fitted on the published single-node Megatron data (``pptune validate --published FILE --fit``), each with a
physical meaning and bounds that keep it plausible:

- ``matmul_half_flops``: GEMM FLOPs at which a kernel reaches half its plateau (tile/wave quantisation, tail).
- ``memory_efficiency``: achieved fraction of the HBM datasheet bandwidth for elementwise work (<= 1).
- ``launch_overhead_us``: host time per kernel launch of eager Megatron (Python, dispatcher, autograd).
- ``nvlink_latency_us``: per-step latency of a ring collective inside the node (NCCL over NVLink).
- ``per_microbatch_overhead_ms``: engine work per micro-batch outside the layers (data, loss reduction).

Held fixed because these data cannot identify them (every GEMM here has h <= 2048):
``matmul_efficiency`` = 267.9 / 312 = 0.859, the maximum achievable matmul rate Stas Bekman measured on an
A100 SXM with BF16 inputs (stas00/ml-engineering, compute/accelerator/README.md, "Maximum Achievable Matmul
FLOPS comparison table", CUDA 12.1), and the NVLink bandwidth at its datasheet 300 GB/s per direction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pptune.hardware import Cluster

# Maximum achievable matmul TFLOP/s (MAMF) over the dense datasheet peak (stas00/ml-engineering, see above).
A100_MAMF_EFFICIENCY = 267.9 / 312
H100_MAMF_EFFICIENCY = 792.1 / 989

FITTED: tuple[str, ...] = ("matmul_half_flops", "memory_efficiency", "launch_overhead_us", "nvlink_latency_us",
                           "per_microbatch_overhead_ms")
# Physically plausible ranges the fit may not leave.
BOUNDS: dict[str, tuple[float, float]] = {
    "matmul_half_flops": (1e6, 1e11),
    "memory_efficiency": (0.3, 1.0),
    "launch_overhead_us": (0.0, 100.0),
    "nvlink_latency_us": (0.0, 50.0),
    "per_microbatch_overhead_ms": (0.0, 20.0),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Constants:
    """One set of model constants (the fitted ones plus the fixed GEMM plateau)."""

    matmul_efficiency: float = A100_MAMF_EFFICIENCY
    matmul_half_flops: float
    memory_efficiency: float
    launch_overhead_us: float
    nvlink_latency_us: float
    per_microbatch_overhead_ms: float

    def apply(self, cluster: Cluster) -> Cluster:
        """``cluster`` with these constants in its GPU and its intra-node link."""
        gpu = dataclasses.replace(cluster.gpu, matmul_efficiency=self.matmul_efficiency,
                                  matmul_half_flops=self.matmul_half_flops, memory_efficiency=self.memory_efficiency,
                                  launch_overhead_us=self.launch_overhead_us)
        return cluster.replace(gpu=gpu, intra_node_latency_us=self.nvlink_latency_us,
                               per_microbatch_overhead_ms=self.per_microbatch_overhead_ms)

    @classmethod
    def of(cls, preset: Cluster) -> Constants:
        """The constants a cluster preset carries now (what ``validate`` evaluates without ``--fit``)."""
        g = preset.gpu
        return cls(matmul_efficiency=g.matmul_efficiency, matmul_half_flops=g.matmul_half_flops,
                       memory_efficiency=g.memory_efficiency, launch_overhead_us=g.launch_overhead_us,
                       nvlink_latency_us=preset.intra_node_latency_us,
                       per_microbatch_overhead_ms=preset.per_microbatch_overhead_ms)

    def fitted_vector(self) -> list[float]:
        return [getattr(self, name) for name in FITTED]

    def with_fitted(self, values: list[float]) -> Constants:
        return dataclasses.replace(self, **dict(zip(FITTED, (float(v) for v in values), strict=True)))

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)
