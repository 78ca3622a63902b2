"""``python -m pptune.validation.profile_worker MODEL ...``: what ``pptune profile`` does, on the thread's CPU clock.

pptune's profiler times CPU layers with the wall clock (``pptune.profile.timing.CpuTimer``). On a shared host
a wall-clock interval also holds the time the scheduler gave other processes, which has nothing to do with
the layer. With one torch thread every forward and backward runs on the calling thread, so that thread's CPU
time (``time.thread_time``) is the layer's time: stalls on caches and memory shared with a concurrent twin
(``contended.py``) still count, being spent on the CPU, while being descheduled does not. This entry point
swaps the profiler's CPU clock for that one, then profiles with the library's ``profile_model`` (the flags are
the ones ``contended.py`` passes, a subset of ``pptune profile``'s) and writes the profile.
"""

from __future__ import annotations

import argparse
import shlex
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


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pptune.validation.profile_worker")
    p.add_argument("model")
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--micro-batch-sizes", type=lambda text: tuple(int(x) for x in text.split(",")), required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--tp", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    import pptune.profile.timing as timing
    from pptune.profile.measure import profile_model
    from pptune.profile.schema import save_profile

    args = parse(argv)
    timing.CpuTimer.time = thread_clock_time  # type: ignore[method-assign]
    profile = profile_model(args.model, seq_len=args.seq_len, micro_batch_sizes=args.micro_batch_sizes, device="cpu",
                            dtype="fp32", threads=args.threads, warmup=args.warmup, repeat=args.repeat,
                            command="pptune profile " + shlex.join(argv), progress=not args.no_progress, tp=args.tp)
    save_profile(profile, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
