"""Profile a model the way a 2-rank run computes: as several identical single-thread processes at once.

On this 2-core machine a rank never computes alone: the other rank keeps the second core (and the shared
caches and memory bandwidth) busy. A profile taken by one process on an otherwise idle machine is therefore
faster than the same layers inside a run. ``contended_profile`` runs ``copies`` profilers of the same model
concurrently (each ``pptune profile --threads 1``), so every layer is timed under the contention the ranks will
have, on each process's own CPU clock (``profile_worker.py``: time other processes of a shared host took is not
counted), and averages their timings layer by layer (the copies measure the same layers, so averaging halves the
noise instead of mixing different things). Other work on the host (this machine is shared) disturbs some
measurements for a while; with ``passes`` > 1 the whole contended profile is taken again and each layer keeps,
per micro-batch size, the pass with the lowest forward + backward time (a disturbance only ever slows a layer).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pptune.errors import RunError
from pptune.profile.schema import InSequence, LayerTiming, Profile, load_profile


def mean_profile(profiles: Sequence[Profile], *, note: str) -> Profile:
    """The first profile with every timing's fwd/bwd time the mean over ``profiles`` (same layers and sizes)."""
    first = profiles[0]
    layers = []
    for i, layer in enumerate(first.layers):
        timings = []
        for j, t in enumerate(layer.timings):
            others: list[LayerTiming] = [p.layers[i].timings[j] for p in profiles]
            if any(o.micro_batch_size != t.micro_batch_size for o in others):
                raise ValueError("profiles of different micro-batch sizes")
            n = len(others)
            timings.append(dataclasses.replace(
                t, fwd_ms=sum(o.fwd_ms for o in others) / n, bwd_ms=sum(o.bwd_ms for o in others) / n,
                fwd_spread_ms=max(o.fwd_spread_ms for o in others), bwd_spread_ms=max(o.bwd_spread_ms for o in others)))
        layers.append(dataclasses.replace(layer, timings=tuple(timings)))
    notes = "; ".join(x for x in (first.notes, note) if x)
    factors = [p.in_sequence for p in profiles]
    in_sequence = tuple(InSequence(micro_batch_size=f[0].micro_batch_size,
                                   fwd_scale=sum(x.fwd_scale for x in f) / len(f),
                                   bwd_scale=sum(x.bwd_scale for x in f) / len(f))
                        for f in zip(*factors, strict=True)) if all(factors) else first.in_sequence
    return dataclasses.replace(first, layers=tuple(layers), notes=notes, in_sequence=in_sequence)


def fastest_pass(profiles: Sequence[Profile], *, note: str) -> Profile:
    """The first profile with each layer's timing at each size taken from the pass where fwd + bwd was lowest."""
    first = profiles[0]
    layers = []
    for i, layer in enumerate(first.layers):
        timings = tuple(min((p.layers[i].timings[j] for p in profiles), key=lambda t: t.fwd_ms + t.bwd_ms)
                        for j in range(len(layer.timings)))
        layers.append(dataclasses.replace(layer, timings=timings))
    return dataclasses.replace(first, layers=tuple(layers), notes="; ".join(x for x in (first.notes, note) if x))


def contended_profile(model: str, *, seq_len: int, micro_batch_sizes: Sequence[int], copies: int = 2,
                      passes: int = 1, warmup: int = 5, repeat: int = 10, command: str | None = None,
                      timeout_s: float = 1800.0, tp: int = 1) -> Profile:
    """Profile ``model`` with ``copies`` concurrent single-thread processes, averaged, ``passes`` times (module docstring).

    Raises:
        RunError: a profiler process failed or timed out (its stderr's last line in the message).
    """
    runs = [_one_pass(model, seq_len=seq_len, micro_batch_sizes=micro_batch_sizes, copies=copies, warmup=warmup,
                      repeat=repeat, timeout_s=timeout_s, tp=tp) for _ in range(passes)]
    note = (f"profiled as {copies} concurrent single-thread processes (the contention of {copies} ranks on this "
            f"machine) on the thread CPU clock, timings averaged over them")
    if passes > 1:
        note += f"; {passes} passes, each layer and size from its fastest pass"
    merged = fastest_pass(runs, note=note) if passes > 1 else dataclasses.replace(
        runs[0], notes="; ".join(x for x in (runs[0].notes, note) if x))
    return dataclasses.replace(merged, command=command or merged.command)


def _pin(cpu: int):
    """A preexec_fn that pins the child to ``cpu``, as each training rank pins itself (pptune.runtime.train)."""
    return lambda: os.sched_setaffinity(0, {cpu})


def _one_pass(model: str, *, seq_len: int, micro_batch_sizes: Sequence[int], copies: int, warmup: int, repeat: int,
              timeout_s: float, tp: int = 1) -> Profile:
    sizes = ",".join(str(s) for s in micro_batch_sizes)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    with tempfile.TemporaryDirectory(prefix="pptune-profile-") as tmp:
        outs = [Path(tmp) / f"copy{i}.json" for i in range(copies)]
        procs = [
            subprocess.Popen([sys.executable, "-m", "pptune.validation.profile_worker", model, "--seq-len", str(seq_len),
                              "--micro-batch-sizes", sizes, "--threads", "1", "--warmup", str(warmup),
                              "--repeat", str(repeat), "-o", str(out), "--no-progress", "--tp", str(tp)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                             preexec_fn=_pin(cpus[i]) if copies <= len(cpus) else None)
            for i, out in enumerate(outs)
        ]
        errors = []
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                raise RunError(f"profiling {model} with {copies} concurrent processes timed out after {timeout_s:g} s") from None
            if proc.returncode != 0:
                errors.append((err.strip().splitlines() or ["no error output"])[-1])
        if errors:
            raise RunError(f"profiling {model} failed: {errors[0]}")
        profiles = [load_profile(out) for out in outs]
    return mean_profile(profiles, note="")
