"""``python -m pptune.validation.profile_worker ARGS``: ``pptune profile ARGS`` timed on the thread's CPU clock.

pptune's profiler times CPU layers with the wall clock (``pptune.profile.timing.CpuTimer``). On a shared host
a wall-clock interval also holds the time the scheduler gave other processes, which has nothing to do with
the layer. With one torch thread every forward and backward runs on the calling thread, so that thread's CPU
time (``time.thread_time``) is the layer's time: stalls on caches and memory shared with a concurrent twin
(``contended.py``) still count, being spent on the CPU, while being descheduled does not. This entry point
swaps the profiler's CPU clock for that one, then runs the ordinary command.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def thread_clock_time(self: object, fn: Callable[[], T]) -> tuple[T, float]:
    """``CpuTimer.time`` on ``time.thread_time``: the calling thread's CPU milliseconds for ``fn()``."""
    start = time.thread_time()
    result = fn()
    return result, (time.thread_time() - start) * 1e3


def main(argv: list[str]) -> int:
    import pptune.profile.timing as timing
    from pptune.cli import main as cli_main

    timing.CpuTimer.time = thread_clock_time  # type: ignore[method-assign]
    return cli_main(["profile", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
