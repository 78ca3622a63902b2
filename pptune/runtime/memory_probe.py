"""Measured memory of one rank of a real run: peak allocated (live tensor) bytes, and reserved bytes on CUDA.

- CUDA: ``torch.cuda.max_memory_allocated`` and ``torch.cuda.max_memory_reserved`` over the whole run (the caching
  allocator's own peaks; reset when the probe starts, before the model is built).
- CPU: there is no caching allocator and DeepSpeed's CPU accelerator reports the process's RSS, which counts the
  interpreter, libraries and freed-but-kept heap. The probe runs torch's profiler with ``profile_memory=True`` from
  before the model is built through the first ``MEMORY_STEPS`` training steps (at least two: Adam's states appear
  in the first optimizer step, so the second step's peak holds weights, gradients, optimizer states and activations
  together): c10's CPU allocator reports every allocation and free to it (``[memory]`` events with signed
  ``nbytes``), and the peak of their running sum is the peak of live tensor bytes. The profiler is stopped after
  those steps, so later (timed) steps run without it.

What the probe cannot see: memory outside torch's allocators (gloo/NCCL internal buffers, the CUDA context).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pptune.runtime.plan_files import PLAN_FILE

MEMORY_STEPS = 2  # the fewest steps that reach the steady-state peak (see module docstring)
CUDA_SOURCE = "torch.cuda.max_memory_allocated / max_memory_reserved"
CPU_SOURCE = "torch.profiler profile_memory: peak of live CPU tensor bytes"
TRACE_ENV = "PPTUNE_MEMORY_TRACE"  # PREFIX: CPU ranks also write PREFIX.<rank>.json ([time, bytes] and op spans)


@dataclass(frozen=True, kw_only=True, slots=True)
class MemoryReading:
    """One rank's measured memory."""

    peak_allocated_bytes: int  # live tensor bytes at the peak
    peak_reserved_bytes: int | None  # CUDA caching allocator's reserved bytes at its peak; None on CPU
    source: str  # how they were measured
    steps: int  # training steps the peak covers (CPU: profiled steps; CUDA: every step)


def peak_of_events(events: list[tuple[int, int]]) -> int:
    """Peak of live bytes from ``(time_ns, signed nbytes)`` allocation (+) and free (-) events.

    A free of memory allocated before the probe started makes the running sum go below zero; the running minimum
    is taken as the start so such frees are not counted against later allocations.
    """
    live = low = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        low = min(low, live)
        peak = max(peak, live - low)
    return peak


class MemoryProbe:
    """Start before the model is built, call ``step_done`` after each training step, then ``reading``."""

    def __init__(self, device: str, *, steps: int = MEMORY_STEPS) -> None:
        self.device, self.steps = device, max(1, steps)
        self._prof: Any = None
        self._events: list[tuple[int, int]] | None = None
        self._done = 0

    def start(self) -> MemoryProbe:
        import torch

        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            from torch.profiler import ProfilerActivity, profile

            self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._prof.__enter__()
        return self

    def step_done(self) -> None:
        """One training step finished; stops the CPU profiler after ``steps`` of them."""
        self._done += 1
        if self._prof is not None and self._done >= self.steps:
            self._stop()

    def _stop(self) -> None:
        prof, self._prof = self._prof, None
        prof.__exit__(None, None, None)
        events = prof.profiler.kineto_results.events()
        self._events = [(e.start_ns(), int(e.nbytes())) for e in events
                        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
        if os.environ.get(TRACE_ENV):  # a diagnosis aid: every allocation and op of this rank, to find the peak
            import torch.distributed as dist

            ops = [(e.name(), e.start_ns(), e.end_ns()) for e in events if e.name() != "[memory]"]
            Path(f"{os.environ[TRACE_ENV]}.{dist.get_rank()}.json").write_text(
                json.dumps({"mem": self._events, "ops": ops}))

    def record_fields(self) -> dict[str, Any]:
        """The reading as ``RankRecord`` fields (``pptune.runtime.measured``)."""
        r = self.reading()
        return {"peak_allocated_bytes": r.peak_allocated_bytes, "peak_reserved_bytes": r.peak_reserved_bytes,
                "memory_source": r.source}

    def reading(self) -> MemoryReading:
        import torch

        if self.device == "cuda":
            return MemoryReading(peak_allocated_bytes=int(torch.cuda.max_memory_allocated()),
                                 peak_reserved_bytes=int(torch.cuda.max_memory_reserved()), source=CUDA_SOURCE,
                                 steps=self._done)
        if self._prof is not None:
            self._stop()
        steps = min(self._done, self.steps)
        return MemoryReading(peak_allocated_bytes=peak_of_events(self._events or []), peak_reserved_bytes=None,
                             source=f"{CPU_SOURCE} (build and {steps} steps)", steps=steps)


def estimated_memory_parts(plan_dir: str | Path) -> list[dict[str, int]] | None:
    """Per stage, the estimate's memory parts (plan.json ``estimate.stages[].memory_parts_bytes``), or None when
    plan.json or the field is absent or malformed (measured.json then carries the measurement alone)."""
    try:
        stages = json.loads((Path(plan_dir) / PLAN_FILE).read_text())["estimate"]["stages"]
        parts = [{str(k): int(v) for k, v in s["memory_parts_bytes"].items()} for s in stages]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return parts
