"""Link probing: measure point-to-point and all-reduce bandwidth and latency between local ranks.

``probe_links`` spawns ``nproc`` processes on 127.0.0.1 (gloo on CPU, NCCL when each rank has a GPU), times
ping-pong send/recv between ranks 0 and 1 and all-reduces over all ranks for message sizes from 4 KiB to
64 MiB, and fits the alpha-beta (Hockney) model ``t(n) = alpha + n / beta`` to each: ``alpha`` is the latency,
``beta`` the bandwidth. The fit is least squares weighted by ``1 / t`` (relative error), so the small messages
fix the latency and the large ones the bandwidth. All-reduce sizes are scaled to ring bus bytes
``2 (k-1)/k * n`` first (the nccl-tests "busbw" convention), which makes its beta comparable to a link's.

A collective inside a training step follows compute, and its cost there is not the back-to-back one: over gloo on
a shared CPU a rank that has just computed waits for its peer and for gloo's threads to be scheduled. So the
probe also times all-reduces of ``BUSY_SIZES_BYTES`` after each of ``BUSY_MATMULS`` matmuls' worth of compute,
minus the compute alone, and fits them like the others: their latency over the ring's ``2 (k-1)`` steps (at least
the back-to-back fit's) is the cluster's ``*_collective_latency_us``, the per-step latency ``pptune.cost.comm``
prices collectives with, and their bus bandwidth (``allreduce_after_compute_bus_gbps``) what a collective inside
a step reaches (the local validation's links take it).

The result is a cluster dict that ``pptune.hardware.load_cluster`` reads: one node of ``nproc`` ranks whose
intra- and inter-node figures are the p2p fit (one node: there is no second link kind to measure), plus the
raw timings and fits under ``calibration.probe``.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pptune.errors import ConfigError, RunError

DEFAULT_SIZES_BYTES: tuple[int, ...] = tuple(4096 * 4**i for i in range(8))  # 4 KiB .. 64 MiB
DEFAULT_REPEAT = 5
WARMUP = 2
INNER_BYTES = 4 * 2**20  # a timed sample moves at least this much (or INNER_MAX operations)
INNER_MAX = 32
BUSY_MATMULS = 8  # 128 x 128 fp32 matmuls between two small all-reduces: ~0.1-0.5 ms of one CPU core
BUSY_SIZES_BYTES = (4096, 64 * 1024, 1024 * 1024)  # a tp all-reduce here is 50 KB (micro-batch 1) to 800 KB (16)
BUSY_INNER = 16


def probe_links(
    nproc: int = 2,
    backend: str | None = None,
    sizes_bytes: Sequence[int] = DEFAULT_SIZES_BYTES,
    repeat: int = DEFAULT_REPEAT,
    *,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Probe the links between ``nproc`` local ranks and return a cluster dict with the fitted figures.

    Args:
        nproc: ranks to spawn (at least 2).
        backend: ``gloo`` or ``nccl``; default nccl when CUDA has a GPU per rank, else gloo.
        sizes_bytes: message sizes (bytes, multiples of 4); at least two distinct sizes for the fit.
        repeat: timed repetitions per size (the median is kept), after a warm-up.
        timeout_s: give up (and kill the ranks) after this many seconds.

    Raises:
        ConfigError: bad arguments. RunError: a rank crashed or the probe timed out.
    """
    import torch
    import torch.multiprocessing as mp

    sizes = sorted({int(s) for s in sizes_bytes})
    if nproc < 2:
        raise ConfigError(f"probing links needs at least 2 ranks, got nproc {nproc}")
    if len(sizes) < 2 or sizes[0] < 4 or any(s % 4 for s in sizes):
        raise ConfigError(f"need at least two distinct message sizes, multiples of 4 bytes, got {list(sizes_bytes)}")
    if repeat < 1:
        raise ConfigError(f"repeat must be positive, got {repeat}")
    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= nproc
    backend = backend or ("nccl" if cuda else "gloo")
    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"backend must be gloo or nccl, got {backend!r}")
    if backend == "nccl" and not cuda:
        raise ConfigError(f"nccl needs {nproc} CUDA GPUs, found {torch.cuda.device_count()}")
    with tempfile.TemporaryDirectory(prefix="pptune-probe-") as tmp:
        out = Path(tmp) / "result.json"
        ctx = mp.spawn(_worker, args=(nproc, backend, _free_port(), sizes, repeat, str(out)), nprocs=nproc,
                       join=False)
        deadline = time.monotonic() + timeout_s
        try:
            while not ctx.join(timeout=0.5):
                if time.monotonic() > deadline:
                    raise RunError(f"link probe with {nproc} ranks ({backend}) timed out after {timeout_s:.0f} s")
        except mp.ProcessRaisedException as exc:
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise RunError(f"link probe rank crashed: {last}") from None
        except mp.ProcessExitedException as exc:
            raise RunError(f"link probe rank exited early: {exc}") from None
        finally:
            for proc in ctx.processes:  # only the ranks this call spawned
                if proc.is_alive():
                    proc.kill()
        raw = json.loads(out.read_text())
    return _cluster_dict(raw, nproc, backend, sizes, repeat)


def fit_alpha_beta(sizes_bytes: Sequence[float], times_s: Sequence[float]) -> tuple[float, float]:
    """Fit ``t = alpha + n / beta``: returns (alpha seconds, beta bytes per second), weighted by 1/t.

    A negative intercept (noise at small sizes) is clamped to 0 and the slope refitted through the origin.
    """
    w = [1.0 / t**2 for t in times_s]  # squared relative error: sum(((t - a - b n) / t)^2)
    sw = sum(w)
    sx = sum(wi * x for wi, x in zip(w, sizes_bytes, strict=True))
    sy = sum(wi * y for wi, y in zip(w, times_s, strict=True))
    sxx = sum(wi * x * x for wi, x in zip(w, sizes_bytes, strict=True))
    sxy = sum(wi * x * y for wi, x, y in zip(w, sizes_bytes, times_s, strict=True))
    det = sw * sxx - sx * sx
    slope = (sw * sxy - sx * sy) / det if det else sy / sx
    alpha = (sy - slope * sx) / sw
    if alpha < 0:
        alpha, slope = 0.0, sxy / sxx
    if slope <= 0:
        raise RunError(f"link probe: times do not grow with message size ({list(times_s)}); rerun with larger sizes")
    return alpha, 1.0 / slope


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, nproc: int, backend: str, port: int, sizes: list[int], repeat: int, out: str) -> None:
    """One rank: ping-pong between ranks 0 and 1, then all-reduces on all ranks; rank 0 writes the medians."""
    import datetime

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # ranks share the cores (docs/REFERENCE.md §2)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    dist.init_process_group(backend, rank=rank, world_size=nproc, timeout=datetime.timedelta(seconds=120))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    p2p: dict[int, float] = {}
    allreduce: dict[int, float] = {}
    for size in sizes:
        buf = torch.ones(size // 4, dtype=torch.float32, device=device)
        inner = _inner_iterations(size)

        p2p[size] = _median_time(functools.partial(_ping_pong, buf, rank), inner, repeat, sync) / 2  # one way
        allreduce[size] = _median_time(functools.partial(dist.all_reduce, buf), inner, repeat, sync)
    busy = {size: _allreduce_after_compute_s(device, repeat, sync, size) for size in BUSY_SIZES_BYTES}
    if rank == 0:
        Path(out).write_text(json.dumps({"p2p": p2p, "allreduce": allreduce, "allreduce_after_compute_s": busy,
                                         "device": _device_name(device)}))
    dist.barrier()
    dist.destroy_process_group()


def _ping_pong(buf: Any, rank: int) -> None:
    """Rank 0 sends to rank 1 and waits for the echo; other ranks sit it out."""
    import torch.distributed as dist

    if rank == 0:
        dist.send(buf, dst=1)
        dist.recv(buf, src=1)
    elif rank == 1:
        dist.recv(buf, src=0)
        dist.send(buf, dst=0)


def _allreduce_after_compute_s(device: Any, repeat: int, sync: Any, size: int) -> float:
    """The time an all-reduce of ``size`` bytes adds after a burst of compute (median with, minus median without;
    >= 0)."""
    import torch
    import torch.distributed as dist

    a = torch.randn(128, 128, device=device)
    buf = torch.ones(size // 4, device=device)

    def compute() -> None:
        for _ in range(BUSY_MATMULS):
            torch.mm(a, a)

    def compute_then_reduce() -> None:
        compute()
        dist.all_reduce(buf)

    with_reduce = _median_time(compute_then_reduce, BUSY_INNER, repeat, sync)
    alone = _median_time(compute, BUSY_INNER, repeat, sync)
    return max(0.0, with_reduce - alone)


def _inner_iterations(size: int) -> int:
    """Back-to-back operations per timed sample: many for small messages, so timer and scheduler noise average out."""
    return max(1, min(INNER_MAX, INNER_BYTES // size))


def _median_time(op: Any, inner: int, repeat: int, sync: Any) -> float:
    """Median over ``repeat`` samples of the mean time of ``inner`` back-to-back ``op()`` calls (after warm-up)."""
    import torch.distributed as dist

    samples = []
    for i in range(WARMUP + repeat):
        dist.barrier()  # all ranks start a sample together
        sync()
        start = time.perf_counter()
        for _ in range(inner):
            op()
        sync()
        if i >= WARMUP:
            samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def _device_name(device: Any) -> str:
    import platform

    if device.type == "cuda":
        import torch

        return str(torch.cuda.get_device_name(device))
    return platform.processor() or platform.machine()


def _gpu_guess(device_name: str, backend: str) -> tuple[str, bool]:
    """The GPU preset a CUDA device name matches (``NVIDIA H100 80GB HBM3`` -> ``H100-SXM5-80GB``), and whether it did."""
    if backend != "nccl":
        return "local-cpu", True
    name = device_name.upper()
    if "H200" in name:
        return "H200-SXM-141GB", True
    if "H100" in name:
        return "H100-SXM5-80GB", True
    if "A100" in name:
        return ("A100-SXM4-80GB" if "80G" in name else "A100-SXM4-40GB"), True
    return "H100-SXM5-80GB", False  # unknown GPU: a placeholder the user should edit (said in calibration.probe)


def _after_compute_fit(busy: Any, bus: float) -> tuple[float | None, float | None, dict[str, float] | None]:
    """(alpha s, bus GB/s or None, {size: us}) of the all-reduces after compute (None when not measured)."""
    if busy is None:
        return None, None, None
    sizes = sorted(int(k) for k in busy)
    times = [max(float(busy[str(s)]), 1e-9) for s in sizes]
    us = {str(s): t * 1e6 for s, t in zip(sizes, times, strict=True)}
    try:
        alpha, beta = fit_alpha_beta([bus * s for s in sizes], times)
    except RunError:  # no growth with size (noise): the smallest message's time is the latency, no bandwidth
        return times[0], None, us
    return alpha, beta / 1e9, us


def _cluster_dict(raw: dict, nproc: int, backend: str, sizes: list[int], repeat: int) -> dict[str, Any]:
    p2p_t = [raw["p2p"][str(s)] for s in sizes]
    ar_t = [raw["allreduce"][str(s)] for s in sizes]
    bus = 2 * (nproc - 1) / nproc  # ring all-reduce moves 2 (k-1)/k n bytes per rank
    p2p_alpha, p2p_beta = fit_alpha_beta(sizes, p2p_t)
    ar_alpha, ar_beta = fit_alpha_beta([bus * s for s in sizes], ar_t)
    gpu, matched = _gpu_guess(raw["device"], backend)
    gbps, lat_us = p2p_beta / 1e9, p2p_alpha * 1e6
    steps = 2 * (nproc - 1)  # ring all-reduce steps
    busy_alpha, busy_gbps, busy = _after_compute_fit(raw.get("allreduce_after_compute_s"), bus)
    step_us = max(ar_alpha, busy_alpha or 0.0) * 1e6 / steps
    probe = {
        "backend": backend, "nproc": nproc, "device": raw["device"], "repeat": repeat, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sizes_bytes": sizes, "p2p_s": p2p_t, "allreduce_s": ar_t,
        "p2p_latency_us": lat_us, "p2p_gbps": gbps,
        "allreduce_latency_us": ar_alpha * 1e6, "allreduce_bus_gbps": ar_beta / 1e9,
        "allreduce_after_compute_us": busy, "allreduce_after_compute_latency_us":
            None if busy_alpha is None else busy_alpha * 1e6,
        "allreduce_after_compute_bus_gbps": busy_gbps, "collective_step_latency_us": step_us,
        "model": "t = alpha + n / beta, least squares weighted by 1/t; all-reduce n = 2(k-1)/k * bytes; collective "
                 "step latency = max(all-reduce alpha, alpha of the all-reduces after compute) / (2(k-1))",
    }
    if not matched:
        probe["gpu_note"] = f"device {raw['device']!r} taken as preset {gpu}; edit 'gpu' if that is wrong"
    return {
        "name": "local-probed", "gpu": gpu, "gpus_per_node": nproc, "num_nodes": 1,
        "intra_node_gbps": gbps, "inter_node_gbps": gbps,
        "intra_node_latency_us": lat_us, "inter_node_latency_us": lat_us,
        "intra_node_collective_latency_us": step_us, "inter_node_collective_latency_us": step_us,
        "calibration": {"probe": probe},
    }
