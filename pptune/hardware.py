"""GPU and Cluster: the hardware a plan runs on, presets from shared/data/gpu_specs.csv, and cluster JSON I/O.

Bandwidths are per GPU, one direction, in GB/s (1e9 bytes/s); latencies in microseconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pptune.errors import SchemaError


@dataclass(frozen=True, kw_only=True, slots=True)
class GPU:
    """One accelerator type. Peaks are datasheet dense rates (upper bounds)."""

    name: str
    peak_bf16_tflops: float
    peak_fp16_tflops: float
    peak_fp32_tflops: float
    memory_gib: float
    hbm_gbps: float  # HBM bandwidth, GB/s
    # Calibrated constants of the analytic compute model (see pptune/profile/analytic.py):
    matmul_efficiency: float = 0.75  # achieved / peak for large, well-shaped GEMMs
    matmul_half_flops: float = 2.0e9  # GEMM FLOPs at which efficiency reaches half of matmul_efficiency
    memory_efficiency: float = 0.7  # achieved / peak HBM bandwidth for elementwise work

    def peak_tflops(self, dtype: str) -> float:
        return {"bf16": self.peak_bf16_tflops, "fp16": self.peak_fp16_tflops, "fp32": self.peak_fp32_tflops}[dtype]

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)


@dataclass(frozen=True, kw_only=True, slots=True)
class Cluster:
    """GPUs and the links between them. ``calibration`` holds fitted engine constants (see pptune calibrate)."""

    name: str
    gpu: GPU
    gpus_per_node: int
    num_nodes: int
    intra_node_gbps: float
    inter_node_gbps: float
    intra_node_latency_us: float
    inter_node_latency_us: float
    # Fitted engine constants, all default 0 (meaning: not calibrated):
    per_microbatch_overhead_ms: float = 0.0  # scheduler/engine cost per micro-batch per stage
    per_step_overhead_ms: float = 0.0  # fixed cost per optimizer step
    calibration: dict[str, Any] = field(default_factory=dict)  # provenance of the fitted constants

    @property
    def num_gpus(self) -> int:
        return self.gpus_per_node * self.num_nodes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Cluster:
        return dataclasses.replace(self, **changes)


def save_cluster(cluster: Cluster, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(cluster.to_dict(), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def _require_file(path: str | os.PathLike) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read cluster file ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: a cluster file must hold a JSON object")
    return data
