"""How much of the host other processes used while a run was timed: the validation's disturbance meter.

This machine is shared; a 2-rank run on 2 cores slows down by whatever CPU time other processes take meanwhile.
``ForeignCpu`` reads the kernel's busy time of all CPUs (``/proc/stat``) and this process's own and its waited-for
children's CPU time (``os.times``: torchrun and, through it, the ranks) before and after the run; the difference
is CPU time other processes used. Divided by the run's wall time and the CPU count it is the share of the
machine that was not ours (0 on a quiet host; 0.5 when another process kept one of two cores busy throughout).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


def _busy_seconds() -> float | None:
    """Busy CPU time of all CPUs since boot (user+nice+system+irq+softirq+steal), in seconds; None off Linux."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class ForeignCpu:
    """Start before a run, ``share()`` after it (see module docstring)."""

    busy: float | None = None
    own: float = 0.0
    wall: float = 0.0

    def start(self) -> ForeignCpu:
        self.busy, self.own, self.wall = _busy_seconds(), _own_seconds(), time.monotonic()
        return self

    def share(self) -> float | None:
        """Share of the machine (0..1) other processes used since ``start``; None when it cannot be told."""
        busy = _busy_seconds()
        if busy is None or self.busy is None:
            return None
        wall = time.monotonic() - self.wall
        foreign = (busy - self.busy) - (_own_seconds() - self.own)
        cpus = os.cpu_count() or 1
        return min(1.0, max(0.0, foreign / (wall * cpus))) if wall > 0 else None


def wait_for_quiet(*, threshold: float = 0.05, window_s: float = 3.0, timeout_s: float = 120.0) -> float | None:
    """Wait until other processes use at most ``threshold`` of the machine over a ``window_s`` window.

    Gives up after ``timeout_s`` (the run then goes ahead and its disturbance is measured anyway). Returns the
    last window's share (None when the host cannot tell). Call it while this process is idle.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        meter = ForeignCpu().start()
        time.sleep(window_s)
        share = meter.share()
        if share is None or share <= threshold or time.monotonic() >= deadline:
            return share
