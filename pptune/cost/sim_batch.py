"""Many simulations of one schedule shape at once: the event loop's arithmetic, one level of ops at a time in numpy.

``simulate_batch`` takes K duration sets (rows) for one ``(schedule, pp, m, vpp)`` and returns what
``pptune.cost.schedule.simulate`` returns for each (without a timeline). The compiled shape groups ops into
levels that do not depend on each other (``pptune.cost.compiled``), so a level is three array operations
over (ops of the level) x K; every op's end is ``max(end of the stage's previous op, end of its input + lag)
+ duration``, the same IEEE operations in the same order as the event loop, hence the same numbers
(``tests/cost/test_sim_batch.py`` checks equality). Small shapes with few rows go through the event loop,
where numpy's per-call cost would dominate. Long steady states are skipped once every row is periodic
(``pptune.cost.steady``): those results agree with the event loop to about 1e-12 relative instead of exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pptune.cost.compiled import CompiledSchedule, compile_schedule
from pptune.cost.schedule import _run
from pptune.cost.steady import SteadyState, steady_state

# Below this many (ops x rows) per level the plain event loop per row is cheaper than numpy calls.
_LOOP_OPS_PER_LEVEL = 40
# Periodicity test: one period's step may differ between window positions by this many float ulps of the
# values (the rounding of the event loop's own additions); the skip then errs by at most that per period.
_ULPS = 64


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
        steady = steady_state(compiled)
        levels = compiled.num_levels - (0 if steady is None else steady.copy_end - steady.copy_first)
        if len(rest) * compiled.num_ops < _LOOP_OPS_PER_LEVEL * max(levels, 1):
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
    """(K, pp) end of each stage's last op, running the compiled levels over all K rows at once.

    In a steady state (``pptune.cost.steady``) the rows are checked for periodicity every few levels; rows
    that repeat themselves get the ends later ops read extrapolated, skip the copied levels and leave the
    batch; the others run on.
    """
    n = compiled.num_ops
    starts = compiled.level_starts
    levels = len(starts) - 1
    last = list(compiled.last)
    prev, dep, dur_idx, lag_idx, runs = compiled.prev, compiled.dep, compiled.dur, compiled.lag, compiled.prev_runs
    result = np.empty((durations.shape[0], len(last)))
    rows = np.arange(durations.shape[0])  # the rows still running
    end = np.zeros((n + 1, len(rows)))  # row n: the zero every op without an input reads
    steady = steady_state(compiled)
    check = _first_check(steady, starts) if steady is not None else levels
    durs_t, lags_t = durations.T, lags.T
    block_end = block_start = 0
    dur = lag = end[:0]
    level = 0
    while level < levels:
        if level == check:
            done = _skip(steady, starts, end, level)
            if done.any():  # these rows are finished once the levels after the copied region have run
                finished = end if done.all() else end[:, done]  # the last use of end when all are done
                result[rows[done]] = _finish(compiled, steady.copy_end, finished, durs_t[:, rows[done]],
                                             lags_t[:, rows[done]])
                keep = ~done
                rows, end = rows[keep], np.ascontiguousarray(end[:, keep])
                if not len(rows):
                    return result
                block_end = 0  # re-gather durations for the remaining rows
            check += max(steady.period, 8)
            if check >= steady.copy_end - max(steady.period, 8):
                check = levels
        a, b = starts[level], starts[level + 1]
        if b > block_end:  # gather durations and lags block by block, not for the whole shape at once
            block_start, block_end = a, starts[min(level + 64, levels)]
            dur = durs_t[dur_idx[block_start:block_end]][:, rows]
            lag = lags_t[lag_idx[block_start:block_end]][:, rows]
        out = end[a:b]
        run = runs[level]
        before = end[run:run + b - a] if run >= 0 else end[prev[a:b]]
        np.maximum(before, end[dep[a:b]] + lag[a - block_start:b - block_start], out=out)
        out += dur[a - block_start:b - block_start]
        level += 1
    result[rows] = end[last].T
    return result


def _finish(compiled: CompiledSchedule, level: int, end: np.ndarray, durs_t: np.ndarray,
            lags_t: np.ndarray) -> np.ndarray:
    """Run the levels from ``level`` on for rows whose earlier ends are known; (rows, pp) stage-last ends."""
    starts = compiled.level_starts
    a = starts[level]
    prev, dep = compiled.prev, compiled.dep
    dur, lag = durs_t[compiled.dur[a:]], lags_t[compiled.lag[a:]]
    for lv in range(level, len(starts) - 1):
        lo, hi = starts[lv], starts[lv + 1]
        out = end[lo:hi]
        np.maximum(end[prev[lo:hi]], end[dep[lo:hi]] + lag[lo - a:hi - a], out=out)
        out += dur[lo - a:hi - a]
    return end[list(compiled.last)].T


def _first_check(steady: SteadyState, starts: tuple[int, ...]) -> int:
    """The first level whose window (``reach`` positions back) lies inside the copied region."""
    floor = starts[steady.copy_first] + steady.reach
    return next((lv for lv in range(steady.copy_first, steady.copy_end) if starts[lv] >= floor), len(starts) - 1)


def _skip(steady: SteadyState, starts: tuple[int, ...], end: np.ndarray, level: int) -> np.ndarray:
    """Rows that repeat themselves over the window before ``level``: fill what later ops read (in place)."""
    here, shift = starts[level], steady.shift
    window = end[here - steady.reach:here]
    step = window - end[here - steady.reach - shift:here - shift]
    lam = step[-1]
    tolerance = _ULPS * np.finfo(np.float64).eps * np.abs(window).max(axis=0)
    done = np.all(np.abs(step - lam) <= tolerance, axis=0)
    if done.any():
        stop = starts[steady.copy_end]
        fill = np.concatenate((np.array([p for p in steady.lasts if p >= here], dtype=np.int64),
                               np.arange(max(steady.needed_from, here), stop)))
        periods = (fill - here) // shift + 1
        cols = np.flatnonzero(done)
        end[fill[:, None], cols] = end[(fill - periods * shift)[:, None], cols] + periods[:, None] * lam[cols]
    return done
