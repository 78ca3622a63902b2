"""GPU and Cluster: the hardware a plan runs on, presets from tests/data/gpu_specs.csv, and cluster JSON I/O.

Bandwidths are per GPU, one direction, in GB/s (1e9 bytes/s); latencies in microseconds. The GPU figures
live in ``pptune/data/gpus.json`` (copied from tests/data/gpu_specs.csv, whose rows cite their sources);
``load_cluster`` turns a preset name, a cluster JSON file or a dict into a validated :class:`Cluster`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pptune.cpu_peak import host_core_peak
from pptune.errors import ConfigError, SchemaError
from pptune.fileio import write_json_atomic
from pptune.limits import check_cluster_size, check_job


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
    launch_overhead_us: float = 0.0  # host (CPU) time per kernel launch of an eager framework; 0: not modelled

    def peak_tflops(self, dtype: str) -> float:
        """The dense peak for ``bf16``, ``fp16`` or ``fp32`` (TFLOP/s)."""
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
    # Latency of one ring step of a collective (all-reduce, reduce-scatter, all-gather); None: the p2p latency above.
    # NCCL's ring steps cost about a p2p message; gloo's between compute steps several (pptune.probe).
    intra_node_collective_latency_us: float | None = None
    inter_node_collective_latency_us: float | None = None
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


# --- presets ------------------------------------------------------------------------------------

# Small-message latencies are rough defaults, not datasheet figures: NCCL p2p between GPUs of one node over
# NVLink takes a few microseconds, across nodes over InfiniBand about twice that (nccl-tests small-message
# times). Replace them with `pptune probe-cluster` figures on a real machine.
NVLINK_LATENCY_US = 5.0
IB_LATENCY_US = 10.0

# local-cpu: this host seen as 2 ranks ("GPUs"), one core each (docs/REFERENCE.md §2: one torch thread per rank).
# Peak: one core of this host as /proc/cpuinfo states it (pptune/cpu_peak.py: widest FMA units x clock), so MFU
# stays below 100% on whatever CPU runs it; the former fixed 80 GFLOP/s (an AVX2 core at 2.5 GHz) gave MFU 150-200%
# on an AVX-512 Xeon whose one thread reaches ~140-173 GFLOP/s in fp32 GEMMs. A VM states its base clock, which
# cpu_peak.py raises to a 3.8 GHz turbo bound, so the peak of a 2-wide AVX2 core is 122 GFLOP/s and of an AVX-512
# one 243. Efficiency 0.5: one AVX2 thread (AMD EPYC) reached 50-63 GFLOP/s (0.41-0.52 of 122), one AVX-512 thread
# (Intel Xeon) 134-173 (0.55-0.71 of 243), fp32 GEMMs of 256..2048. CPUs without AVX512-BF16/AMX
# run torch's bf16 GEMMs far slower (1-2 GFLOP/s measured on an AMD EPYC): on CPU, measure (`pptune profile`).
# Memory: one core streaming torch.add reached ~12 GB/s here. Links: gloo over loopback; `pptune probe-cluster
# --nproc 2` on this 2-core host (while other jobs ran) gave p2p 1.2-1.7 GB/s and 0.2-2 ms latency, all-reduce
# 0.6-0.9 GB/s bus bandwidth: we take 1.4 GB/s and 250 us. Re-probe on any other host.
LOCAL_CPU_RANKS = 2
LOCAL_CPU_MATMUL_EFFICIENCY = 0.5
LOCAL_CPU_MEMORY_GBPS = 12.0
LOCAL_CPU_LINK_GBPS = 1.4
LOCAL_CPU_LINK_LATENCY_US = 250.0

_DATA = Path(__file__).with_name("data") / "gpus.json"
# Fitted analytic-model constants a gpus.json row may carry (see its "calibration" provenance).
_CALIBRATED_GPU_KEYS = ("matmul_efficiency", "matmul_half_flops", "memory_efficiency", "launch_overhead_us")


def _host_memory_gib() -> float:
    """Physical memory of this host per rank (the ranks share it)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: a conservative 8 GiB
        total = 8 * 2**30
    return round(total / 2**30 / LOCAL_CPU_RANKS, 2)


def _build_presets() -> tuple[dict[str, GPU], dict[str, Cluster]]:
    gpus: dict[str, GPU] = {}
    clusters: dict[str, Cluster] = {}
    for row in json.loads(_DATA.read_text())["gpus"]:
        calibrated = {k: float(row[k]) for k in _CALIBRATED_GPU_KEYS if k in row}
        gpu = GPU(
            name=row["name"], peak_bf16_tflops=float(row["peak_bf16_tflops"]),
            peak_fp16_tflops=float(row["peak_fp16_tflops"]), peak_fp32_tflops=float(row["peak_fp32_tflops"]),
            memory_gib=float(row["memory_gib"]), hbm_gbps=float(row["hbm_gbps"]), **calibrated,
        )
        gpus[gpu.name] = gpu
        clusters[row["key"]] = Cluster(
            name=row["key"], gpu=gpu, gpus_per_node=int(row["gpus_per_node"]), num_nodes=1,
            intra_node_gbps=float(row["nvlink_gbps"]), inter_node_gbps=float(row["ib_gbps"]),
            intra_node_latency_us=float(row.get("nvlink_latency_us", NVLINK_LATENCY_US)),
            inter_node_latency_us=float(row.get("ib_latency_us", IB_LATENCY_US)),
            per_microbatch_overhead_ms=float(row.get("per_microbatch_overhead_ms", 0.0)),
            per_step_overhead_ms=float(row.get("per_step_overhead_ms", 0.0)),
            calibration=dict(row.get("calibration") or {}),
        )
    core = host_core_peak()
    cpu = GPU(
        name="local-cpu", peak_bf16_tflops=core.bf16_tflops, peak_fp16_tflops=core.fp16_tflops,
        peak_fp32_tflops=core.fp32_tflops, memory_gib=_host_memory_gib(), hbm_gbps=LOCAL_CPU_MEMORY_GBPS,
        matmul_efficiency=LOCAL_CPU_MATMUL_EFFICIENCY, matmul_half_flops=1.0e6, memory_efficiency=1.0,
    )
    gpus[cpu.name] = cpu
    clusters["local-cpu"] = Cluster(
        name="local-cpu", gpu=cpu, gpus_per_node=LOCAL_CPU_RANKS, num_nodes=1,
        intra_node_gbps=LOCAL_CPU_LINK_GBPS, inter_node_gbps=LOCAL_CPU_LINK_GBPS,
        intra_node_latency_us=LOCAL_CPU_LINK_LATENCY_US, inter_node_latency_us=LOCAL_CPU_LINK_LATENCY_US,
    )
    return gpus, clusters


GPU_PRESETS, CLUSTER_PRESETS = _build_presets()


# --- loading and saving -------------------------------------------------------------------------

def save_cluster(cluster: Cluster, path: str | os.PathLike) -> Path:
    """Write a cluster as JSON (temporary file, then rename); ``load_cluster`` reads it back."""
    return write_json_atomic(path, cluster.to_dict())


def load_cluster(spec: str | os.PathLike | dict | Cluster, *, num_gpus: int | None = None) -> Cluster:
    """A cluster from a preset name, a cluster JSON file, a dict of the same keys, or a Cluster.

    JSON keys: ``name``, ``gpu`` (a GPU preset name such as ``H100-SXM5-80GB``, a cluster preset name such as
    ``h100-80g``, or an object of GPU fields), ``gpus_per_node``, ``num_nodes``, ``intra_node_gbps``,
    ``inter_node_gbps``, ``intra_node_latency_us``, ``inter_node_latency_us`` and the optional calibration keys
    ``per_microbatch_overhead_ms``, ``per_step_overhead_ms``, ``calibration``. Missing keys take the values of
    the preset whose GPU ``gpu`` names (or the preset ``name`` names).

    Args:
        spec: preset name, path, dict or Cluster.
        num_gpus: when given, ``num_nodes = ceil(num_gpus / gpus_per_node)``; fewer GPUs than a node holds
            shrink the node to ``gpus_per_node = num_gpus``.

    Raises:
        SchemaError: unknown preset, unreadable or malformed file, bad type or negative number (one line
            naming the file and the field).
    """
    if isinstance(spec, Cluster):
        cluster = spec
    elif isinstance(spec, dict):
        cluster = _parse_cluster(spec, "<cluster dict>")
    else:
        text = os.fspath(spec)
        if text in CLUSTER_PRESETS:
            cluster = CLUSTER_PRESETS[text]
        elif text.endswith(".json") or os.path.sep in text or Path(text).exists():
            cluster = _parse_cluster(_require_file(text), text)
        else:
            raise SchemaError(f"unknown cluster {text!r}; presets: {', '.join(CLUSTER_PRESETS)}; or a cluster JSON file")
    return cluster if num_gpus is None else _resize(cluster, num_gpus)


def _resize(cluster: Cluster, num_gpus: int) -> Cluster:
    if not isinstance(num_gpus, int) or isinstance(num_gpus, bool) or num_gpus < 1:
        raise ConfigError(f"num_gpus must be a positive integer, got {num_gpus!r}")
    check_job(gpus=num_gpus)
    if num_gpus < cluster.gpus_per_node:
        return cluster.replace(gpus_per_node=num_gpus, num_nodes=1)
    return cluster.replace(num_nodes=math.ceil(num_gpus / cluster.gpus_per_node))


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


_GPU_KEYS = tuple(f.name for f in dataclasses.fields(GPU))
_CLUSTER_NUMBERS = ("intra_node_gbps", "inter_node_gbps", "intra_node_latency_us", "inter_node_latency_us",
                    "per_microbatch_overhead_ms", "per_step_overhead_ms")
_OPTIONAL_NUMBERS = ("intra_node_collective_latency_us", "inter_node_collective_latency_us")  # null: the p2p latency
_POSITIVE = ("intra_node_gbps", "inter_node_gbps", "peak_bf16_tflops", "peak_fp16_tflops", "peak_fp32_tflops",
             "memory_gib", "hbm_gbps", "matmul_efficiency", "memory_efficiency")


def _base_for(data: dict) -> Cluster | None:
    gpu = data.get("gpu")
    gpu_name = gpu.get("name") if isinstance(gpu, dict) else gpu
    if isinstance(gpu_name, str):
        if gpu_name in CLUSTER_PRESETS:
            return CLUSTER_PRESETS[gpu_name]
        for preset in CLUSTER_PRESETS.values():
            if preset.gpu.name == gpu_name:
                return preset
    name = data.get("name")
    return CLUSTER_PRESETS.get(name) if isinstance(name, str) else None


# Plausible ranges of every number of a GPU or cluster, far outside any real device, so that absurd finite
# values (peak_bf16_tflops 1e-300, inter_node_gbps 1e-300) are refused at load time instead of overflowing into
# inf or 300-digit step times:
# - peaks in [1e-3, 1e6] TFLOP/s: one CPU core does > 1 GFLOP/s; 1 EFLOP/s is 400x a B200's dense bf16;
# - memory in [1e-3, 2**20] GiB (1 MiB to 1 PiB; the largest GPUs hold 192-288 GiB);
# - HBM bandwidth in [1e-3, 1e6] GB/s (1 MB/s to 1 PB/s, 100x a B200's 8 TB/s); link bandwidths in
#   [1e-3, 1e12] GB/s: what-if studies (and pptune's tests) model free links as 1e12, which only makes a
#   transfer take ~0 ms; the low end is the dangerous one (1e-300 GB/s: 300-digit step times);
# - efficiencies (achieved / peak) in [1e-3, 4]: <= 1 when the datasheet peak is right; a fit against an
#   underestimated peak (a guessed CPU peak) may exceed 1, never by 4x;
# - matmul_half_flops in [0, 1e15] (A100: 5e9; 1e15 is a GEMM a second long at peak);
# - latencies in [0, 1e7] us and overheads in [0, 1e7] ms (10 s per message, 2.8 h per micro-batch or step).
_RANGES: dict[str, tuple[float, float]] = {
    "peak_bf16_tflops": (1e-3, 1e6), "peak_fp16_tflops": (1e-3, 1e6), "peak_fp32_tflops": (1e-3, 1e6),
    "memory_gib": (1e-3, 2.0**20), "hbm_gbps": (1e-3, 1e6), "matmul_efficiency": (1e-3, 4.0),
    "memory_efficiency": (1e-3, 4.0), "matmul_half_flops": (0.0, 1e15), "launch_overhead_us": (0.0, 1e7),
    "intra_node_gbps": (1e-3, 1e12), "inter_node_gbps": (1e-3, 1e12), "intra_node_latency_us": (0.0, 1e7),
    "inter_node_latency_us": (0.0, 1e7), "intra_node_collective_latency_us": (0.0, 1e7),
    "inter_node_collective_latency_us": (0.0, 1e7), "per_microbatch_overhead_ms": (0.0, 1e7), "per_step_overhead_ms": (0.0, 1e7),
}
# calibration.compute_scale (real layer time / profiled layer time): a fit gives ~0.5-3; beyond 1000x either way
# the profile is of another machine.
COMPUTE_SCALE_RANGE = (1e-3, 1e3)


def _number(origin: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{origin}: field '{key}': expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0 or (key.rsplit(".", 1)[-1] in _POSITIVE and value == 0):
        raise SchemaError(f"{origin}: field '{key}': must be {'positive' if key.rsplit('.', 1)[-1] in _POSITIVE else 'non-negative'} and finite, got {value!r}")
    lo, hi = _RANGES.get(key.rsplit(".", 1)[-1], (0.0, math.inf))
    if not lo <= value <= hi:
        raise SchemaError(f"{origin}: field '{key}': {value!r} is outside the plausible range [{lo:g}, {hi:g}] "
                          "(see pptune/hardware.py)")
    return float(value)


def _count(origin: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SchemaError(f"{origin}: field '{key}': must be a positive integer, got {value!r}")
    return value


def _parse_gpu(raw: Any, base: GPU | None, origin: str) -> GPU:
    if isinstance(raw, str):
        if raw in GPU_PRESETS:
            return GPU_PRESETS[raw]
        if raw in CLUSTER_PRESETS:
            return CLUSTER_PRESETS[raw].gpu
        raise SchemaError(f"{origin}: field 'gpu': unknown GPU {raw!r}; presets: {', '.join(dict.fromkeys([*GPU_PRESETS, *CLUSTER_PRESETS]))}")
    if not isinstance(raw, dict):
        raise SchemaError(f"{origin}: field 'gpu': expected a GPU name or an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_GPU_KEYS))
    if unknown:
        raise SchemaError(f"{origin}: field 'gpu.{unknown[0]}': unknown key; GPU keys: {', '.join(_GPU_KEYS)}")
    values: dict[str, Any] = dataclasses.asdict(base) if base is not None else {}
    for key, value in raw.items():
        if key == "name":
            if not isinstance(value, str) or not value:
                raise SchemaError(f"{origin}: field 'gpu.name': expected a non-empty string, got {value!r}")
            values[key] = value
        else:
            values[key] = _number(origin, f"gpu.{key}", value)
    if base is None:  # a GPU of the user's own: these must be given; fp16 defaults to bf16 (same tensor cores)
        for key in ("name", "peak_bf16_tflops", "memory_gib", "hbm_gbps"):
            if key not in values:
                raise SchemaError(f"{origin}: field 'gpu.{key}': missing (needed for a GPU that is not a preset)")
        values.setdefault("peak_fp16_tflops", values["peak_bf16_tflops"])
        # A100's ratio of non-tensor FP32 to BF16 peak (19.5 / 312) when the user gives no fp32 figure.
        values.setdefault("peak_fp32_tflops", values["peak_bf16_tflops"] / 16)
    return GPU(**values)


def _parse_cluster(data: dict, origin: str) -> Cluster:
    known = {f.name for f in dataclasses.fields(Cluster)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SchemaError(f"{origin}: field '{unknown[0]}': unknown key; cluster keys: {', '.join(sorted(known))}")
    base = _base_for(data)
    values: dict[str, Any] = {f.name: getattr(base, f.name) for f in dataclasses.fields(Cluster)} if base else {}
    if base is None:
        values.update(num_nodes=1, intra_node_latency_us=NVLINK_LATENCY_US, inter_node_latency_us=IB_LATENCY_US,
                      calibration={})
    if "gpu" in data:
        raw = data["gpu"]
        # Inherit GPU fields only when the object describes the base preset's GPU (or names none).
        same = base is not None and (not isinstance(raw, dict) or raw.get("name") in (None, base.gpu.name, base.name))
        if isinstance(raw, dict) and same and raw.get("name") == base.name:  # type: ignore[union-attr]
            raw = {**raw, "name": base.gpu.name}  # type: ignore[union-attr]
        values["gpu"] = _parse_gpu(raw, base.gpu if same else None, origin)  # type: ignore[union-attr]
    for key, value in data.items():
        if key == "name":
            if not isinstance(value, str) or not value:
                raise SchemaError(f"{origin}: field 'name': expected a non-empty string, got {value!r}")
            values[key] = value
        elif key in ("gpus_per_node", "num_nodes"):
            values[key] = _count(origin, key, value)
        elif key in _CLUSTER_NUMBERS:
            values[key] = _number(origin, key, value)
        elif key in _OPTIONAL_NUMBERS:
            values[key] = None if value is None else _number(origin, key, value)
        elif key == "calibration":
            if not isinstance(value, dict):
                raise SchemaError(f"{origin}: field 'calibration': expected an object, got {type(value).__name__}")
            if "compute_scale" in value:
                try:
                    check_compute_scale(value["compute_scale"], origin=f"{origin}: field 'calibration.compute_scale'")
                except ConfigError as exc:
                    raise SchemaError(str(exc)) from None
            values[key] = value
    for key in ("gpu", "gpus_per_node", "intra_node_gbps", "inter_node_gbps"):
        if key not in values:
            raise SchemaError(f"{origin}: field '{key}': missing (no preset to take it from: 'gpu' names none)")
    values.setdefault("name", values["gpu"].name)
    values["calibration"] = dict(values.get("calibration") or {})
    try:
        check_cluster_size(gpus_per_node=values["gpus_per_node"], num_nodes=values["num_nodes"], origin=origin)
    except ConfigError as exc:
        raise SchemaError(str(exc)) from None
    return Cluster(**values)


def check_compute_scale(value: Any, *, origin: str) -> float:
    """A calibrated compute scale: a finite number in COMPUTE_SCALE_RANGE (ConfigError otherwise)."""
    lo, hi = COMPUTE_SCALE_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"{origin}: must be a number in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)
