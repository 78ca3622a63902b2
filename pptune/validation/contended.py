"""Profile a model the way a 2-rank run computes: as several identical single-thread processes at once.

On this 2-core machine a rank never computes alone: the other rank keeps the second core (and the shared
caches and memory bandwidth) busy. A profile taken by one process on an otherwise idle machine is therefore
faster than the same layers inside a run. ``contended_profile`` runs ``copies`` profilers of the same model
concurrently (each ``pptune profile --threads 1``), so every layer is timed under the contention the ranks will
have, and averages their timings layer by layer (the copies measure the same layers, so averaging halves the
noise instead of mixing different things).
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
from pptune.profile.schema import LayerTiming, Profile, load_profile


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
    return dataclasses.replace(first, layers=tuple(layers), notes=notes)


def contended_profile(model: str, *, seq_len: int, micro_batch_sizes: Sequence[int], copies: int = 2,
                      warmup: int = 5, repeat: int = 10, command: str | None = None,
                      timeout_s: float = 1800.0) -> Profile:
    """Profile ``model`` with ``copies`` concurrent single-thread processes and average their timings.

    Raises:
        RunError: a profiler process failed or timed out (its stderr's last line in the message).
    """
    sizes = ",".join(str(s) for s in micro_batch_sizes)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="pptune-profile-") as tmp:
        outs = [Path(tmp) / f"copy{i}.json" for i in range(copies)]
        procs = [
            subprocess.Popen([sys.executable, "-m", "pptune", "profile", model, "--seq-len", str(seq_len),
                              "--micro-batch-sizes", sizes, "--threads", "1", "--warmup", str(warmup),
                              "--repeat", str(repeat), "-o", str(out), "--no-progress"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
            for out in outs
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
    note = (f"profiled as {copies} concurrent single-thread processes (the contention of {copies} ranks on this "
            f"machine), timings averaged over them")
    return dataclasses.replace(mean_profile(profiles, note=note), command=command or profiles[0].command)
