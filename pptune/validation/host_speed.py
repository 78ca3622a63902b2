"""How fast the host computes right now: a fixed workload timed before the profile and around every run.

This machine is a shared virtual machine, and its speed drifts in phases that no process inside it can see:
the same 200 single-thread matmuls (``[128, 192] @ [192, 768]`` fp32) took 77 ms for half a minute and 95-105
ms for the next, with spikes to 175 ms, while ``/proc/stat`` showed no other process and no steal time
(two pinned processes, 2026-12-04, AMD EPYC). A profile taken in a fast phase and a run timed in a slow one then
differ by up to 30% whatever the cost model does; the validation's other disturbance meter
(``host_load.ForeignCpu``) cannot see it.

``host_speed_ms`` runs the workload in ``copies`` concurrent processes, each pinned to its own core with one
thread (the contention of the ranks, as the contended profile has it), and returns the mean of their medians.
The validation takes it before and after the profile and before and after each run; a run whose ratio to the
profile's figure is off by more than ``LocalSettings.max_host_drift`` counts as disturbed and is repeated,
and the report shows every run's ratio beside its error, and the errors of the predictions scaled by it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

ROWS, INNER, OUTER = 128, 192, 768
MATMULS = 200  # one sample: ~80 ms of one core here
SAMPLES = 5


def sample_ms(samples: int = SAMPLES) -> float:
    """The median of ``samples`` timings of the workload in this process (one torch thread)."""
    import torch

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    a, x = torch.randn(INNER, OUTER, generator=g), torch.randn(ROWS, INNER, generator=g)
    for _ in range(3):
        x @ a
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(MATMULS):
            x @ a
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def host_speed_ms(copies: int = 2, *, samples: int = SAMPLES, timeout_s: float = 120.0) -> float | None:
    """Mean of ``copies`` concurrent processes' medians (module docstring); None when a probe process failed."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "pptune.validation.host_speed", str(cpus[i % len(cpus)]),
                               str(samples)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
             for i in range(copies)]
    values = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            return None
        try:
            values.append(float(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            return None
    return sum(values) / len(values) if values and all(p.returncode == 0 for p in procs) else None


def main(argv: list[str]) -> None:
    cpu, samples = int(argv[0]), int(argv[1])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    print(f"{sample_ms(samples):.4f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
