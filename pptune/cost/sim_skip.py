"""The batched simulator's steady-state skip: periodicity checks, extrapolated ends, the levels after the copied region.

``pptune.cost.sim_batch._level_ends`` runs a shape's levels over many rows; in a steady state
(``pptune.cost.steady``) it calls ``skip`` every few levels: rows whose window of ends repeats itself (after one
period or several) get the ends later ops read extrapolated and leave; ``leaving`` keeps what the levels after
the copied region read of them and ``finish_after_region`` runs those levels for all of them at once.
"""

from __future__ import annotations

import numpy as np

from pptune.cost.compiled import CompiledSchedule
from pptune.cost.steady import SteadyState

# Periodicity test: one period's step may differ between window positions by this many float ulps of the
# values (the rounding of the event loop's own additions); the skip then errs by at most that per period.
_ULPS = 64


def history_start(steady: SteadyState, starts: tuple[int, ...], level: int, pp: int) -> int:
    """The first position the levels from ``level`` on (and later periodicity checks) may read."""
    return max(0, min(starts[level] - steady.reach - max_cycles(pp) * steady.shift, steady.needed_from))


def leaving(compiled: CompiledSchedule, steady: SteadyState, end: np.ndarray, done: np.ndarray,
             rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the levels after the copied region read of the ``done`` columns (positions ``needed_from`` up to the
    region's end), and their stage-last ends before that."""
    a = compiled.level_starts[steady.copy_end]
    lo = min(steady.needed_from, a)
    early = [p for p in compiled.last if p < lo]
    return rows[done], end[lo:a, done], end[early][:, done]


def finish_after_region(compiled: CompiledSchedule, steady: SteadyState, head: np.ndarray, early: np.ndarray,
            durs_t: np.ndarray, lags_t: np.ndarray) -> np.ndarray:
    """Run the levels after the copied region; (rows, pp) stage-last ends.

    ``head``: the ends of positions ``lo = min(needed_from, region end)`` up to the region's end (what those
    levels read), ``early``: the stage-last ends before ``lo``. Positions are offset by ``lo``.
    """
    starts = compiled.level_starts
    a = starts[steady.copy_end]
    lo = a - head.shape[0]
    tail = np.empty((compiled.num_ops + 1 - lo, head.shape[1]))  # positions lo..n; later ones written below
    tail[:a - lo] = head
    tail[-1] = 0.0
    prev, dep = compiled.prev[a:] - lo, compiled.dep[a:] - lo
    dur, lag = durs_t[compiled.dur[a:]], lags_t[compiled.lag[a:]]
    for lv in range(steady.copy_end, len(starts) - 1):
        i, j = starts[lv] - a, starts[lv + 1] - a
        out = tail[i + a - lo:j + a - lo]
        np.maximum(tail[prev[i:j]], tail[dep[i:j]] + lag[i:j], out=out)
        out += dur[i:j]
    last = np.array(compiled.last)
    result = np.empty((len(last), tail.shape[1]))
    inside = last >= lo
    result[inside] = tail[last[inside] - lo]
    result[~inside] = early
    return result.T


def max_cycles(pp: int) -> int:
    """How many periods back the periodicity test reads: the longest critical cycle it looks for (a cycle
    through every stage of a 1F1B pipeline spans up to pp micro-batches, one period each)."""
    return pp + 1


def first_check(steady: SteadyState, starts: tuple[int, ...]) -> int:
    """The first level whose window (``reach`` positions back) lies inside the copied region."""
    floor = starts[steady.copy_first] + steady.reach
    return next((lv for lv in range(steady.copy_first, steady.copy_end) if starts[lv] >= floor), len(starts) - 1)


def skip(steady: SteadyState, starts: tuple[int, ...], end: np.ndarray, level: int, pp: int,
          offsets: np.ndarray | None = None, alive: np.ndarray | None = None) -> np.ndarray:
    """Rows that repeat themselves over the window before ``level``: fill what later ops read (in place).

    A row repeats itself with ``k`` periods when every end of the window equals the end ``k`` periods
    earlier plus one constant: by induction (``pptune.cost.steady``) so does every later end of the copied
    region. ``k = 1`` is the common case; a pipeline whose slowest cycle runs through several stages (p2p
    lags on every boundary) repeats only after that cycle's micro-batches, so larger ``k`` are tried too.
    """
    here, shift, reach = starts[level], steady.shift, steady.reach
    window = end[here - reach:here]
    scale = np.finfo(np.float64).eps * np.abs(window).max(axis=0)
    step = window - end[here - reach - shift:here - shift]
    lam = step[-1].copy()
    done = np.all(np.abs(step - lam) <= _ULPS * scale, axis=0)
    if alive is not None:  # columns of rows that left already are not looked at again
        done &= alive
    cycles = np.where(done, 1, 0)
    floor = starts[steady.copy_first - steady.period]  # the copies' sources start here
    kmax = min((here - reach - floor) // shift, max_cycles(pp))
    todo = np.flatnonzero(~done if alive is None else ~done & alive)
    if kmax >= 2 and len(todo):
        cycles[todo], lam[todo] = multi_period_cycles(end, here, reach, shift, kmax, todo, scale[todo])
        done = cycles > 0
    if done.any():
        stop = starts[steady.copy_end]
        fill = np.concatenate((np.array([p for p in steady.lasts if p >= here], dtype=np.int64),
                               np.arange(max(steady.needed_from, here), stop)))
        # A longer shape's row (``offsets``): base position p holds its position p + offset; ends it read before
        # ``here`` (from needed_from on) are then moved too.
        early = np.arange(min(steady.needed_from, here), here) if offsets is not None else fill[:0]
        for k in np.unique(cycles[done]).tolist():
            cols = np.flatnonzero(cycles == k)
            if offsets is None or not offsets[cols].any():
                periods = (fill - here) // (k * shift) + 1
                end[fill[:, None], cols] = end[(fill - periods * k * shift)[:, None], cols] + periods[:, None] * lam[cols]
                continue
            to = np.concatenate((early, fill))[:, None]
            at = to + offsets[cols][None, :]
            periods = np.maximum((at - here) // (k * shift) + 1, 0)  # 0: a simulated end, shared with the base
            end[to, cols[None, :]] = end[at - periods * k * shift, cols[None, :]] + periods * lam[cols]
    return done


def multi_period_cycles(end: np.ndarray, here: int, reach: int, shift: int, kmax: int, cols: np.ndarray,
            scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``cols``: the smallest k in [2, kmax] for which every end of the window (the ``reach``
    positions before ``here``) equals the end k periods earlier plus one constant (to k * 64 ulps), and that
    constant; 0 where none. Eight sampled window positions shortlist the k; the smallest on the list is then
    tested on the whole window (a few rounds)."""
    ks = np.arange(2, kmax + 1)
    tol = _ULPS * scale  # (rows,), times k below
    sample = here - 1 - np.unique(np.linspace(0, reach - 1, 8).astype(np.int64))
    now = end[sample][:, cols]  # (sample, rows)
    step = now[None, :, :] - end[sample[None, :] - ks[:, None] * shift][:, :, cols]  # (k, sample, rows)
    short = np.all(np.abs(step - step[:, :1]) <= ks[:, None, None] * tol, axis=1)  # (k, rows)
    out = np.zeros(len(cols), dtype=np.int64)
    lam = np.zeros(len(cols))
    rows = np.arange(len(cols))
    window = end[here - reach:here][:, cols]
    back = np.arange(here - reach, here)[:, None]
    for _ in range(4):  # a few false positives of the shortlist per row at most
        has = short.any(axis=0)
        if not has.any():
            break
        r = rows[has]
        k = ks[short[:, has].argmax(axis=0)]
        sub = window[:, r] - end[back - k[None, :] * shift, cols[r]]
        ok = np.all(np.abs(sub - sub[-1]) <= k * tol[r], axis=0)
        out[r[ok]] = k[ok]
        lam[r[ok]] = sub[-1, ok]
        short[:, r[ok]] = False
        short[k[~ok] - 2, r[~ok]] = False
    return out, lam
