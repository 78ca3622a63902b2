"""Steady state of a compiled schedule: where the pipeline repeats itself, so a simulation may skip ahead.

In 1F1B's steady state, level ``l + 2`` holds the same ops as level ``l`` one micro-batch later (the same
stage, chunk, op type, hence durations and lags), and their inputs are the same ops shifted the same way;
interleaved 1F1B repeats every ``2 * pp * vpp`` levels (one micro-batch group), ZB-H1 every 3, GPipe's
phases every level. ``steady_state`` finds, at compile time, the longest run of levels ``[l1, l2)`` that the
levels ``[l1 + P, l2 + P)`` copy with a constant position shift ``D``.

Why skipping is exact (max-plus homogeneity): every op ends at ``max(end of its stage predecessor, end of
its input + lag) + duration``. If, in a window reaching back at least as far as any op of the copied region
reads, every end equals the end ``D`` positions earlier plus one ``lambda`` per row, then by induction over
the copied region every later op does too: ``E[q] = E[q - k D] + k lambda``. The simulator checks the
window (to 64 float ulps of the values, the rounding the event loop itself makes), fills only the ends
that later ops read, and resumes after the region; rows that are not periodic yet are simply run on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pptune.cost.compiled import CompiledSchedule

# Do not look for a steady state in shapes with fewer levels (nothing worth skipping).
MIN_LEVELS = 96


@dataclass(frozen=True, kw_only=True, slots=True)
class SteadyState:
    """Levels ``[copy_first, copy_end)`` repeat the levels ``period`` earlier, every position ``shift`` later."""

    period: int  # P, levels
    shift: int  # D, positions
    copy_first: int  # first level that is a copy (l1 + P)
    copy_end: int  # level after the last copy (l2 + P)
    reach: int  # the farthest any op of the copied region reads back (positions)
    needed_from: int  # the first position that ops after the region read (or the region's end)
    lasts: tuple[int, ...]  # stage-last positions inside the region (their ends are results)


def steady_state(compiled: CompiledSchedule) -> SteadyState | None:
    """The longest repeating run of levels of ``compiled``, or None (too short, or none); kept in its memo."""
    memo = compiled.memo
    if "steady" not in memo:
        memo["steady"] = _steady_state(compiled)
    return memo["steady"]


def _steady_state(compiled: CompiledSchedule) -> SteadyState | None:
    levels = compiled.num_levels
    if levels < MIN_LEVELS:
        return None
    starts = np.asarray(compiled.level_starts)
    counts = np.diff(starts)
    n = compiled.num_ops
    level_of = np.repeat(np.arange(levels), counts)
    best: tuple[int, int, int, int] | None = None  # (saved levels, l1, l2, P)
    for period in _periods(compiled):
        if levels < 4 * period:
            continue
        pairs = levels - period  # levels l that have a partner l + P
        shift = starts[period:period + pairs] - starts[:pairs]
        pos = np.arange(starts[pairs])
        d = shift[level_of[pos]]
        q = np.minimum(pos + d, n - 1)  # levels whose partner has fewer ops fail the count test anyway
        ok = ((compiled.dur[q] == compiled.dur[pos]) & (compiled.lag[q] == compiled.lag[pos])
              & (compiled.prev[q] == np.where(compiled.prev[pos] == n, n, compiled.prev[pos] + d))
              & (compiled.dep[q] == np.where(compiled.dep[pos] == n, n, compiled.dep[pos] + d)))
        good = (counts[period:] == counts[:pairs]) & np.logical_and.reduceat(ok, starts[:pairs])
        run = _longest_run(good, shift)
        if run is not None and (best is None or run[1] - run[0] - period > best[0]):
            best = (run[1] - run[0] - period, run[0], run[1], period)
    if best is None or best[0] < MIN_LEVELS // 2:
        return None
    _, l1, l2, period = best
    shift = int(starts[l1 + period] - starts[l1])
    a, b = int(starts[l1 + period]), int(starts[l2 + period])
    reads = np.minimum(np.where(compiled.prev == n, np.arange(n), compiled.prev),
                       np.where(compiled.dep == n, np.arange(n), compiled.dep))
    reach = int((np.arange(a, b) - reads[a:b]).max())
    later = reads[b:]
    needed_from = int(min(b, later.min())) if len(later) else b
    return SteadyState(period=period, shift=shift, copy_first=l1 + period, copy_end=l2 + period,
                       reach=max(reach, shift), needed_from=needed_from,
                       lasts=tuple(p for p in compiled.last if needed_from > p >= a))


def _periods(compiled: CompiledSchedule) -> tuple[int, ...]:
    """Candidate periods in levels: the ops one unit of work adds to every stage (F+B, F+B+W, a group)."""
    ops = compiled.op
    if (ops > 2).any():  # DeepSpeed's blocking messages (compile_rendezvous): a micro-batch adds 9 levels (its F,
        return (6, 9)  # B and their messages' halves), 6 at pp 2; tests/cost/test_steady.py checks pp 2-16
    if (ops == 2).any():
        return (3,)  # ZB-H1: F, B and W per micro-batch
    if compiled.chunks > compiled.pp:
        return (2 * compiled.chunks,)  # interleaved: F and B of every chunk of a group of pp micro-batches
    return (1, 2)  # GPipe's phases (1), 1F1B (2)


def _longest_run(good: np.ndarray, shift: np.ndarray) -> tuple[int, int] | None:
    """The longest run [l1, l2) of good levels with one shift value."""
    breaks = ~good
    breaks[1:] |= shift[1:] != shift[:-1]
    best = None
    start = None
    for i, bad in enumerate(np.append(breaks, True).tolist()):
        if bad:
            if start is not None and (best is None or i - start > best[1] - best[0]):
                best = (start, i)
            start = None if i >= len(good) or not good[i] else i
        elif start is None:
            start = i
    return best


def long_enough(compiled: CompiledSchedule) -> bool:
    """Whether the copied region is long enough for the rows of longer shapes to settle in (deep 1F1B pipelines
    settle after up to about 3 pp levels; a shorter base would send most rows back to their own shape)."""
    steady = steady_state(compiled)
    return steady is not None and steady.copy_end - steady.copy_first >= max(3 * compiled.pp, 3 * steady.period)


def family_offset(base: CompiledSchedule, other: CompiledSchedule) -> int | None:
    """Positions by which ``other``'s ops after its copied region follow ``base``'s (a whole number of steady
    periods), or None when ``other`` is not ``base`` with more periods: checked op by op, once per pair (kept in
    ``base``'s memo, by ``other``'s shape)."""
    offsets = base.memo.setdefault("family", {})
    if other.key not in offsets:
        offsets[other.key] = _family_offset(base, other)
    return offsets[other.key]


def _family_offset(base: CompiledSchedule, other: CompiledSchedule) -> int | None:
    sb, so = steady_state(base), steady_state(other)
    if (sb is None or so is None or other.m <= base.m or (sb.period, sb.shift, sb.copy_first, sb.reach)
            != (so.period, so.shift, so.copy_first, so.reach) or (so.copy_end - sb.copy_end) % sb.period):
        return None
    off = (so.copy_end - sb.copy_end) // sb.period * sb.shift
    nb, no = base.num_ops, other.num_ops
    if no - nb != off or so.needed_from - sb.needed_from != off:
        return None
    a = base.level_starts[sb.copy_end]  # base positions [0, a) are other's [0, a); [a, nb) are other's + off
    extra = sb.copy_end - sb.copy_first  # levels: other's starts after the region are base's shifted
    if (tuple(x + off for x in base.level_starts[sb.copy_end:]) != other.level_starts[so.copy_end:]
            or other.level_starts[:sb.copy_end + 1] != base.level_starts[:sb.copy_end + 1] or extra <= 0):
        return None
    where = np.concatenate([np.arange(a), np.arange(a, nb) + off])
    # Ops after the region read the region's last ends (from needed_from on): other's, ``off`` later.
    lo = sb.needed_from

    def moved(x: np.ndarray) -> np.ndarray:  # base pointers in other's numbering (sentinel to sentinel)
        return np.where(x == nb, no, np.where(x >= lo, x + off, x))

    same = (np.array_equal(other.dur[where], base.dur) and np.array_equal(other.lag[where], base.lag)
            and np.array_equal(other.stage[where], base.stage)
            and np.array_equal(other.prev[where[a:]], moved(base.prev[a:]))
            and np.array_equal(other.dep[where[a:]], moved(base.dep[a:]))
            and np.array_equal(other.prev[:a], np.where(base.prev[:a] == nb, no, base.prev[:a]))
            and np.array_equal(other.dep[:a], np.where(base.dep[:a] == nb, no, base.dep[:a]))
            and other.last == tuple(int(x) + off if x >= lo else int(x) for x in base.last))
    return off if same else None
