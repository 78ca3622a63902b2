"""Wall-clock timers for one call: ``time.perf_counter`` on CPU, CUDA events on a GPU; median and spread.

CUDA kernels run asynchronously, so a host clock would time the launch, not the work: the CUDA
timer records events on the stream around the call and synchronises before reading them
(the method of the CUDA C++ Best Practices Guide, "Using CUDA GPU Timers").
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

T = TypeVar("T")


class Timer(Protocol):
    def time(self, fn: Callable[[], T]) -> tuple[T, float]:
        """Run ``fn()`` and return (its result, the milliseconds it took)."""
        ...


class CpuTimer:
    """Host wall-clock time of a call (torch's CPU ops run synchronously)."""

    def time(self, fn: Callable[[], T]) -> tuple[T, float]:
        start = time.perf_counter()
        result = fn()
        return result, (time.perf_counter() - start) * 1e3


class CudaTimer:
    """GPU time of a call, from CUDA events recorded on the current stream around it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def time(self, fn: Callable[[], T]) -> tuple[T, float]:
        torch.cuda.synchronize(self.device)  # nothing earlier may run inside the window
        self.start.record()
        result = fn()
        self.end.record()
        self.end.synchronize()
        return result, float(self.start.elapsed_time(self.end))


def make_timer(device: torch.device) -> Timer:
    return CudaTimer(device) if device.type == "cuda" else CpuTimer()


@dataclass(frozen=True, kw_only=True, slots=True)
class Summary:
    """Median and max - min of repeated timings."""

    median_ms: float
    spread_ms: float


def summarize(samples_ms: Sequence[float]) -> Summary:
    if not samples_ms:
        raise ValueError("no timing samples")
    return Summary(median_ms=statistics.median(samples_ms), spread_ms=max(samples_ms) - min(samples_ms))
