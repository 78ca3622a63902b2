"""Many simulations of one schedule shape at once: the event loop's arithmetic, one level of ops at a time in numpy.

``simulate_batch`` takes K duration sets (rows) for one ``(schedule, pp, m, vpp)`` and returns what
``pptune.cost.schedule.simulate`` returns for each (without a timeline). The compiled shape groups ops into
levels that do not depend on each other (``pptune.cost.compiled``), so a level is three array operations
over (ops of the level) x K; every op's end is ``max(end of the stage's previous op, end of its input + lag)
+ duration``, the same IEEE operations in the same order as the event loop, hence the same numbers
(``tests/cost/test_sim_batch.py`` checks equality). Small shapes with few rows go through the event loop,
where numpy's per-call cost would dominate. Long steady states are skipped once every row is periodic
(``pptune.cost.steady``, ``pptune.cost.sim_skip``): those results agree with the event loop to about 1e-12
relative instead of exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pptune.cost.cache import CostCache
from pptune.cost.compiled import CompiledSchedule, _runs, compiled_schedule
from pptune.cost.orders import RENDEZVOUS_1F1B
from pptune.cost.schedule import _run
from pptune.cost.sim_skip import finish_after_region, first_check, history_start, leaving
from pptune.cost.sim_skip import skip as _skip  # a name of this module, so tests can wrap it
from pptune.cost.steady import family_offset, long_enough, steady_state

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
                   p2p: np.ndarray, w: np.ndarray | None = None, *, cache: CostCache | None = None) -> BatchSchedule:
    """Simulate K pipelines of one shape.

    Args:
        schedule, pp, m, vpp: the shape (validated by the caller, as ``simulate`` would).
        fwd, bwd: (K, pp * vpp) forward and full backward time per chunk.
        p2p: (K, pp * vpp - 1) lag per chunk boundary.
        w: (K, pp * vpp) the weight-gradient share of ``bwd`` (zb_h1 only).
        cache: keeps compiled shapes (and their unions) for later calls; a fresh one when not given.
    """
    return simulate_batches([(schedule, pp, m, vpp, fwd, bwd, p2p, w)], cache=cache)[0]


def simulate_batches(items: list[tuple], *, cache: CostCache | None = None) -> list[BatchSchedule]:
    """``simulate_batch`` for many shapes at once (each item: its arguments, ``w`` included).

    Shapes without a steady state run their levels in one shared loop (level ``l`` of every such shape in one
    set of array operations, rows padded to the widest shape of a bucket): the Python work of a level costs
    more than its arithmetic, and every op still computes exactly what it computes alone.
    """
    cache = CostCache() if cache is None else cache
    prepared = [_Prepared(*item, cache=cache) for item in items]
    shared = []
    families: dict[tuple, list[_Prepared]] = {}
    for p in prepared:
        if p.durations is None:
            continue
        steady = steady_state(p.compiled)
        levels = p.compiled.num_levels - (0 if steady is None else steady.copy_end - steady.copy_first)
        if len(p.rest) * p.compiled.num_ops < _LOOP_OPS_PER_LEVEL * max(levels, 1):
            p.ends = np.array([_loop_ends(p.compiled, d, g)
                               for d, g in zip(p.durations.tolist(), p.lags.tolist(), strict=True)])
        elif steady is None:
            shared.append(p)
        else:
            c = p.compiled
            families.setdefault((p.schedule, c.pp, c.chunks), []).append(p)
    for family in families.values():
        _run_family(family)
    for p, ends in zip(shared, _shared_level_ends([(p.compiled, p.durations, p.lags) for p in shared], cache),
                       strict=True):
        p.ends = ends
    return [p.result() for p in prepared]


def _run_family(family: list[_Prepared]) -> None:
    """Shapes with a steady state that differ only in their micro-batch count, in one ``_level_ends`` call.

    The shape with more micro-batches is the base shape with more copies of its steady period: the same ops
    before and after the copied region, its ends shifted by whole periods. So its rows run on the base's
    levels, and a row that settles fills the region's last ends as its own (longer) region would end
    (``offsets``). A row that has not settled when the base's region runs out is simulated on its own shape.
    """
    family.sort(key=lambda p: p.compiled.m)
    base = next((p for p in family if long_enough(p.compiled)), None)
    members = [p for p in family if p is not base and base is not None
               and family_offset(base.compiled, p.compiled) is not None]
    for p in family:
        if p is not base and p not in members:
            p.ends = _level_ends(p.compiled, p.durations, p.lags)
    if base is None:
        return
    group = [base, *members]
    offsets = np.concatenate([np.full(len(p.rest), 0 if p is base else family_offset(base.compiled, p.compiled))
                              for p in group])
    ends, unsettled = _level_ends(base.compiled, np.concatenate([p.durations for p in group]),
                                  np.concatenate([p.lags for p in group]), offsets=offsets)
    at = 0
    for p in group:
        k = len(p.rest)
        p.ends = ends[at:at + k]
        redo = unsettled[at:at + k]
        if redo.any():
            p.ends[redo] = _level_ends(p.compiled, p.durations[redo], p.lags[redo])
        at += k


class _Prepared:
    """One shape's rows: busy time and the closed-form rows now, the simulated ends later (``ends``)."""

    def __init__(self, schedule: str, pp: int, m: int, vpp: int, fwd: np.ndarray, bwd: np.ndarray,
                 p2p: np.ndarray, w: np.ndarray | None = None, *, cache: CostCache) -> None:
        fwd = np.asarray(fwd, dtype=np.float64)
        k, chunks = fwd.shape
        p2p = np.asarray(p2p, dtype=np.float64).reshape(k, chunks - 1)
        rendezvous = schedule == RENDEZVOUS_1F1B
        if schedule == "zb_h1":
            assert w is not None, "zb_h1 needs the weight-gradient share"
            w = np.asarray(w, dtype=np.float64)
            bwd = np.asarray(bwd, dtype=np.float64) - w
        elif rendezvous:  # DeepSpeed's blocking messages: the transfers are the third block of durations, no lags
            w = np.concatenate([p2p, np.zeros((k, 1))], axis=1)
            bwd = np.asarray(bwd, dtype=np.float64)
            p2p = np.zeros_like(p2p)
        else:
            w = np.zeros_like(fwd)
            bwd = np.asarray(bwd, dtype=np.float64)
        # Busy time per stage, added chunk by chunk as the event loop's caller does: m * (f + b + w); transfers
        # are no stage work.
        per_chunk = m * (fwd + bwd) if rendezvous else m * (fwd + bwd + w)
        busy = per_chunk[:, :pp].copy()
        for v in range(1, vpp):
            busy += per_chunk[:, v * pp:(v + 1) * pp]
        self.schedule, self.pp, self.busy = schedule, pp, busy
        self.compiled = compiled_schedule(cache, schedule, pp, m, vpp)
        self.step = np.empty(k)
        self.end = np.empty((k, pp))
        closed = np.zeros(k, dtype=bool)
        if schedule in ("gpipe", "1f1b"):
            # The simulator's closed form: uniform stages without p2p: (m + pp - 1)(t_f + t_b), stage s ends
            # s*t_b early.
            closed = ((fwd.min(axis=1) == fwd.max(axis=1)) & (bwd.min(axis=1) == bwd.max(axis=1))
                      & ~(p2p != 0).any(axis=1))
            if closed.any():
                f0, b0 = fwd[closed, 0], bwd[closed, 0]
                self.step[closed] = (m + pp - 1) * (f0 + b0)
                self.end[closed] = self.step[closed][:, None] - np.arange(pp)[None, :] * b0[:, None]
        self.rest = np.flatnonzero(~closed)
        self.durations = self.lags = self.ends = None
        if len(self.rest):
            rest = self.rest
            self.durations = np.concatenate([fwd[rest], bwd[rest], w[rest]], axis=1)
            self.lags = np.concatenate([p2p[rest], np.zeros((len(rest), 1))], axis=1)

    def result(self) -> BatchSchedule:
        step, end, pp = self.step, self.end, self.pp
        if self.ends is not None:
            end[self.rest] = self.ends
            step[self.rest] = self.ends.max(axis=1)
        total = np.cumsum(self.busy, axis=1)[:, -1]  # summed stage by stage, as sum() does
        with np.errstate(divide="ignore", invalid="ignore"):
            bubble = np.where(step > 0, 1.0 - total / (pp * step), 0.0)
        return BatchSchedule(step_ms=step, busy_ms=self.busy, end_ms=end, bubble_fraction=bubble,
                             peak_inflight=self.compiled.peak)


def _shared_level_ends(parts: list[tuple[CompiledSchedule, np.ndarray, np.ndarray]],
                       cache: CostCache) -> list[np.ndarray]:
    """``_level_ends`` (without steady state) of several shapes, buckets of similar row counts in one loop."""
    out: list[np.ndarray | None] = [None] * len(parts)
    order = sorted(range(len(parts)), key=lambda i: -parts[i][1].shape[0])
    while order:  # a bucket: the widest shape left and every shape at least half as wide
        width = parts[order[0]][1].shape[0]
        bucket = [i for i in order if 2 * parts[i][1].shape[0] >= width]
        order = [i for i in order if 2 * parts[i][1].shape[0] < width]
        for i, ends in zip(bucket, _union_ends([parts[i] for i in bucket], width, cache), strict=True):
            out[i] = ends
    return out  # type: ignore[return-value]


def _union_ends(parts: list[tuple[CompiledSchedule, np.ndarray, np.ndarray]], width: int,
                cache: CostCache) -> list[np.ndarray]:
    """Run the disjoint union of the shapes' op graphs, level by level, ``width`` rows (missing rows: zeros)."""
    if len(parts) == 1:
        return [_level_ends(*parts[0])]
    shapes = tuple(c for c, _, _ in parts)
    u = cache.get("unions", tuple(c.key for c in shapes), lambda: _union(shapes))
    slots = np.zeros((u.dur_offsets[-1] + u.lag_offsets[-1], width))  # (duration slots, then lag slots; row)
    lag_base = u.dur_offsets[-1]
    for (_, d, g), d_off, g_off in zip(parts, u.dur_offsets, u.lag_offsets, strict=False):
        slots[d_off:d_off + d.shape[1], :d.shape[0]] = d.T
        slots[lag_base + g_off:lag_base + g_off + g.shape[1], :g.shape[0]] = g.T
    level_starts, runs, prev, dep = u.level_starts, u.runs, u.prev, u.dep
    end = _uninitialised((u.n + 1, width))  # every position is written by its level before it is read
    end[-1] = 0.0
    levels = len(level_starts) - 1
    block_end = block_start = 0
    durs = lags = slots[:0]
    for lv in range(levels):
        a, b = level_starts[lv], level_starts[lv + 1]
        if b > block_end:  # durations and lags of a block of levels at a time (one gather each)
            block_start, block_end = a, level_starts[min(lv + 64, levels)]
            durs = slots[u.dur[block_start:block_end]]
            lags = slots[u.lag[block_start:block_end] + lag_base]
        out = end[a:b]
        run = runs[lv]
        before = end[run:run + b - a] if run >= 0 else end[prev[a:b]]
        np.maximum(before, end[dep[a:b]] + lags[a - block_start:b - block_start], out=out)
        out += durs[a - block_start:b - block_start]
    return [end[last][:, :d.shape[0]].T for last, (_, d, _) in zip(u.lasts, parts, strict=True)]


@dataclass(frozen=True, slots=True, eq=False)
class _Union:
    """The disjoint union of several compiled shapes' op graphs, level by level (positions as in CompiledSchedule)."""

    shapes: tuple[CompiledSchedule, ...]
    n: int
    prev: np.ndarray
    dep: np.ndarray
    dur: np.ndarray  # into the shapes' duration slots, one block per shape (``dur_offsets``)
    lag: np.ndarray
    level_starts: tuple[int, ...]
    runs: tuple[int, ...]
    lasts: list[np.ndarray]
    dur_offsets: list[int]  # each shape's first duration slot, then the total
    lag_offsets: list[int]


def _union(shapes: tuple[CompiledSchedule, ...]) -> _Union:
    """The union of ``shapes`` (the caller keeps it in its CostCache: the planner pools the same shapes again)."""
    counts = np.zeros((len(shapes), max(c.num_levels for c in shapes)), dtype=np.int64)
    for i, c in enumerate(shapes):
        counts[i, :c.num_levels] = np.diff(c.level_starts)
    starts = np.concatenate(([0], np.cumsum(counts.sum(axis=0))))
    first = starts[:-1][None, :] + np.cumsum(counts, axis=0) - counts  # (shape, level): its first position
    n = int(starts[-1])
    prev, dep = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    dur, lag = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    lasts, d_offs, g_offs = [], [0], [0]
    for i, c in enumerate(shapes):
        level = np.repeat(np.arange(c.num_levels), counts[i, :c.num_levels])
        pos = first[i, level] + np.arange(c.num_ops) - np.asarray(c.level_starts)[level]
        to = np.append(pos, n)  # its sentinel is the union's
        prev[pos], dep[pos] = to[c.prev], to[c.dep]
        dur[pos], lag[pos] = c.dur + d_offs[-1], c.lag + g_offs[-1]
        d_offs.append(d_offs[-1] + 3 * c.chunks)  # fwd, bwd, w per chunk
        g_offs.append(g_offs[-1] + c.chunks)  # a lag per chunk boundary and the no-lag slot
        lasts.append(pos[list(c.last)])
    level_starts = tuple(starts.tolist())
    return _Union(shapes=shapes, n=n, prev=prev, dep=dep, dur=dur, lag=lag, level_starts=level_starts,
                  runs=_runs(prev, level_starts, n), lasts=lasts, dur_offsets=d_offs, lag_offsets=g_offs)


def _uninitialised(shape: tuple[int, int]) -> np.ndarray:
    """An array for simulated ends that the caller writes before it reads (a test fills it with NaN)."""
    return np.empty(shape)


def _loop_ends(compiled: CompiledSchedule, dur: list[float], lag: list[float]) -> list[float]:
    ends = _run(compiled, dur, lag)
    return [ends[i] for i in compiled.last]


def _level_ends(compiled: CompiledSchedule, durations: np.ndarray, lags: np.ndarray,
                offsets: np.ndarray | None = None):
    """(K, pp) end of each stage's last op, running the compiled levels over all K rows at once.

    In a steady state (``pptune.cost.steady``) the rows are checked for periodicity every few levels; rows
    that repeat themselves (after one period or after several: a critical cycle of the pipeline may span many
    micro-batches) get the ends later ops read extrapolated, skip the copied levels and leave the batch; the
    others run on. Leaving copies only the positions later levels still read, not the whole history.

    ``offsets`` (K,): rows of a longer shape of the same family (``_run_family``): their copied region is
    longer by this many positions. Then the result is ``(ends, unsettled)``: rows with an offset that did not
    settle before the last check are left out (``unsettled``, their ends undefined).
    """
    n = compiled.num_ops
    starts = compiled.level_starts
    levels = len(starts) - 1
    last = list(compiled.last)
    prev, dep, dur_idx, lag_idx, runs = compiled.prev, compiled.dep, compiled.dur, compiled.lag, compiled.prev_runs
    result = np.empty((durations.shape[0], len(last)))
    rows = np.arange(durations.shape[0])  # the rows still running
    end = _uninitialised((n + 1, len(rows)))  # written level by level before anything reads it
    end[-1] = 0.0  # row n: the zero every op without an input reads
    steady = steady_state(compiled)
    check = first = first_check(steady, starts) if steady is not None else levels
    durs_t, lags_t = np.ascontiguousarray(durations.T), np.ascontiguousarray(lags.T)  # (slots, rows)
    run_durs, run_lags = durs_t, lags_t  # the columns of the rows still running
    block_end = block_start = 0
    dur = lag = end[:0]
    left: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # rows that left: (rows, ends finish reads, early)
    unsettled = np.zeros(durations.shape[0], dtype=bool)
    if offsets is not None and check >= levels:  # no check at all: a longer shape's rows cannot run here
        unsettled = offsets > 0
        rows = rows[~unsettled]
        end = end[:, ~unsettled]
        run_durs, run_lags = durs_t[:, rows], lags_t[:, rows]
    alive = np.ones(len(rows), dtype=bool)  # columns of ``end`` still to be run (others left, not yet dropped)
    level = 0
    while level < levels:
        if level == check:
            done = _skip(steady, starts, end, level, compiled.pp, None if offsets is None else offsets[rows], alive)
            # Check every few periods, less often the longer the rows take to settle.
            check += max(steady.period, 8, min((check - first) // 2, 64))
            if check >= steady.copy_end - max(steady.period, 8):
                check = levels
            drop = done.copy()
            if check == levels and offsets is not None:  # the last check: longer shapes' rows cannot run on here
                late = alive & ~done & (offsets[rows] > 0)
                unsettled[rows[late]] = True
                drop |= late
            if done.any():  # these rows are finished once the levels after the copied region have run
                left.append(leaving(compiled, steady, end, done, rows))
            if drop.any():
                alive &= ~drop
                if not alive.any():
                    break
                # Drop the columns (copying the history later levels read) only once they are half the array:
                # until then running them on costs less than the copy.
                if 2 * alive.sum() <= len(alive):
                    rows = rows[alive]
                    end = _keep_columns(end, alive, history_start(steady, starts, level, compiled.pp), starts[level],
                                        last)
                    alive = np.ones(len(rows), dtype=bool)
                    run_durs, run_lags = durs_t[:, rows], lags_t[:, rows]
                    block_end = 0  # re-gather durations for the remaining rows
        a, b = starts[level], starts[level + 1]
        if b > block_end:  # gather durations and lags block by block, not for the whole shape at once
            block_start, block_end = a, starts[min(level + 64, levels)]
            dur = run_durs[dur_idx[block_start:block_end]]
            lag = run_lags[lag_idx[block_start:block_end]]
        out = end[a:b]
        run = runs[level]
        before = end[run:run + b - a] if run >= 0 else end[prev[a:b]]
        np.maximum(before, end[dep[a:b]] + lag[a - block_start:b - block_start], out=out)
        out += dur[a - block_start:b - block_start]
        level += 1
    else:
        result[rows[alive]] = end[last][:, alive].T
    if left:  # one run of the levels after the copied region for every row that skipped it
        gone = np.concatenate([r for r, _, _ in left])
        result[gone] = finish_after_region(compiled, steady, np.concatenate([t for _, t, _ in left], axis=1),
                               np.concatenate([e for _, _, e in left], axis=1), durs_t[:, gone], lags_t[:, gone])
    return result if offsets is None else (result, unsettled)


def _keep_columns(end: np.ndarray, keep: np.ndarray, lo: int, here: int, last: list[int]) -> np.ndarray:
    """``end[:, keep]`` for positions ``[lo, here)``, the stage-last ones and the zero sentinel: what is read
    again (positions from ``here`` on are written by their own level before anything reads them)."""
    out = _uninitialised((end.shape[0], int(keep.sum())))
    out[lo:here] = end[lo:here, keep]
    out[-1] = 0.0
    early = [p for p in last if p < lo]
    if early:
        out[early] = end[early][:, keep]
    return out
