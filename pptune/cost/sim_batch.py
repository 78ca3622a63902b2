"""Many simulations of one schedule shape at once: the event loop's arithmetic, one level of ops at a time in numpy.

``simulate_batch`` takes K duration sets (rows) for one ``(schedule, pp, m, vpp)`` and returns what
``pptune.cost.schedule.simulate`` returns for each (without a timeline). The compiled shape groups ops into
levels that do not depend on each other (``pptune.cost.compiled``), so a level is three array operations
over (ops of the level) x K; every op's end is ``max(end of the stage's previous op, end of its input + lag)
+ duration``, the same IEEE operations in the same order as the event loop, hence the same numbers
(``tests/cost/test_sim_batch.py`` checks equality). Small shapes with few rows go through the event loop,
where numpy's per-call cost would dominate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pptune.cost.compiled import CompiledSchedule, compile_schedule
from pptune.cost.schedule import _run

# Below this many (ops x rows) per level the plain event loop per row is cheaper than numpy calls.
_LOOP_OPS_PER_LEVEL = 40


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchSchedule:
    """Per row: makespan, stage busy time and last-op end (what ScheduleResult holds, as arrays)."""

    step_ms: np.ndarray  # (K,)
    busy_ms: np.ndarray  # (K, pp)
    end_ms: np.ndarray  # (K, pp)
    bubble_fraction: np.ndarray  # (K,)
    peak_inflight: tuple[int, ...]


def simulate_batch(schedule: str, pp: int, m: int, vpp: int, fwd: np.ndarray, bwd: np.ndarray,
                   p2p: np.ndarray, w: np.ndarray | None = None) -> BatchSchedule:
    """Simulate K pipelines of one shape.

    Args:
        schedule, pp, m, vpp: the shape (validated by the caller, as ``simulate`` would).
        fwd, bwd: (K, pp * vpp) forward and full backward time per chunk.
        p2p: (K, pp * vpp - 1) lag per chunk boundary.
        w: (K, pp * vpp) the weight-gradient share of ``bwd`` (zb_h1 only).
    """
    fwd = np.asarray(fwd, dtype=np.float64)
    k, chunks = fwd.shape
    if schedule == "zb_h1":
        assert w is not None, "zb_h1 needs the weight-gradient share"
        w = np.asarray(w, dtype=np.float64)
        bwd = np.asarray(bwd, dtype=np.float64) - w
    else:
        w = np.zeros_like(fwd)
        bwd = np.asarray(bwd, dtype=np.float64)
    p2p = np.asarray(p2p, dtype=np.float64).reshape(k, chunks - 1)
    # Busy time per stage, added chunk by chunk as the event loop's caller does: m * (f + b + w).
    per_chunk = m * (fwd + bwd + w)
    busy = per_chunk[:, :pp].copy()
    for v in range(1, vpp):
        busy += per_chunk[:, v * pp:(v + 1) * pp]
    compiled = compile_schedule(schedule, pp, m, vpp)
    step = np.empty(k)
    end = np.empty((k, pp))
    closed = np.zeros(k, dtype=bool)
    if schedule in ("gpipe", "1f1b"):
        # The simulator's closed form: uniform stages without p2p: (m + pp - 1)(t_f + t_b), stage s ends s*t_b early.
        closed = ((fwd.min(axis=1) == fwd.max(axis=1)) & (bwd.min(axis=1) == bwd.max(axis=1))
                  & ~(p2p != 0).any(axis=1))
        if closed.any():
            f0, b0 = fwd[closed, 0], bwd[closed, 0]
            step[closed] = (m + pp - 1) * (f0 + b0)
            end[closed] = step[closed][:, None] - np.arange(pp)[None, :] * b0[:, None]
    rest = np.flatnonzero(~closed)
    if len(rest):
        durations = np.concatenate([fwd[rest], bwd[rest], w[rest]], axis=1)
        lags = np.concatenate([p2p[rest], np.zeros((len(rest), 1))], axis=1)
        if len(rest) * compiled.num_ops < _LOOP_OPS_PER_LEVEL * compiled.num_levels:
            ends = np.array([_loop_ends(compiled, d, g) for d, g in zip(durations.tolist(), lags.tolist(), strict=True)])
        else:
            ends = _level_ends(compiled, durations, lags)
        end[rest] = ends
        step[rest] = ends.max(axis=1)
    total = np.cumsum(busy, axis=1)[:, -1]  # summed stage by stage, as sum() does
    with np.errstate(divide="ignore", invalid="ignore"):
        bubble = np.where(step > 0, 1.0 - total / (pp * step), 0.0)
    return BatchSchedule(step_ms=step, busy_ms=busy, end_ms=end, bubble_fraction=bubble, peak_inflight=compiled.peak)


def _loop_ends(compiled: CompiledSchedule, dur: list[float], lag: list[float]) -> list[float]:
    ends = _run(compiled, dur, lag)
    return [ends[i] for i in compiled.last]


def _level_ends(compiled: CompiledSchedule, durations: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """(K, pp) end of each stage's last op, running the compiled levels over all K rows at once."""
    n = compiled.num_ops
    dur = durations.T[compiled.dur]  # (N, K): each op's duration in every row
    lag = lags.T[compiled.lag]
    end = np.zeros((n + 1, durations.shape[0]))  # row n: the zero every op without an input reads
    prev, dep, starts = compiled.prev, compiled.dep, compiled.level_starts
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        level = end[a:b]
        np.maximum(end[prev[a:b]], end[dep[a:b]] + lag[a:b], out=level)
        level += dur[a:b]
    return end[list(compiled.last)].T
