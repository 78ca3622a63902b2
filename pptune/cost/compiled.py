"""A schedule shape compiled for simulation: every op with its stage, duration, input and lag, grouped into levels.

An op's *level* is one more than the larger level of the op before it on its stage and of the op it waits
for (its input): the op count of the longest dependency chain ending in it. Ops of one level never depend
on each other, so the simulator may run a whole level at once (``pptune.cost.sim_batch`` does, for many
duration sets in numpy); in level order the ops are also a valid sequence for the one-at-a-time event loop
(``pptune.cost.schedule``). Both compute every op's end as ``max(end of the stage's previous op, end of its
input + lag) + duration``, so they agree exactly.

Levels are found without a Python loop per op: along one stage ``L[p] = p + 1 + max(0, max_{q<=p}(L_in[q] - q))``
(a running maximum), and sweeping the stages forward then backward until nothing changes reaches the
longest-path levels from below (integers, so the fixed-point test is exact). 1F1B-style orders settle in
2-3 sweeps. Callers keep compiled shapes in a ``CostCache`` (``compiled_schedule``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pptune.cost.cache import CostCache
from pptune.cost.orders import (
    RECV_ACT,
    RECV_GRAD,
    RENDEZVOUS_1F1B,
    SEND_ACT,
    SEND_GRAD,
    B,
    F,
    deepspeed_instructions,
    order_arrays,
)

SEND, RECV = 3, 4  # op codes of a blocking message's two halves (compile_rendezvous)


@dataclass(frozen=True, slots=True, eq=False)
class CompiledSchedule:
    """One schedule shape, ops sorted by level (positions 0..N-1; position N is a zero sentinel).

    Per position: ``stage``; ``dur`` = duration index ``op * chunks + chunk`` into ``fwd + bwd + w``;
    ``dep`` = position of the input op; ``prev`` = position of the stage's previous op; ``lag`` = the chunk
    boundary whose p2p time the input pays (``chunks - 1``: none).
    """

    pp: int
    chunks: int
    m: int
    op: np.ndarray  # 0 F, 1 B, 2 W
    chunk: np.ndarray
    microbatch: np.ndarray
    stage: np.ndarray
    prev: np.ndarray
    dep: np.ndarray
    dur: np.ndarray
    lag: np.ndarray
    level_starts: tuple[int, ...]  # first position of each level, then N
    prev_runs: tuple[int, ...]  # per level: where its ops' stage predecessors start when consecutive, else -1
    last: tuple[int, ...]  # per stage: position of its last op
    peak: tuple[int, ...]  # per stage: most forward units whose B has not run
    key: tuple = ()  # (schedule, pp, m, vpp)
    # What is derived from the shape once (event_rows, steady.steady_state, steady.family_offset): kept with it, so
    # whoever keeps the compiled schedule (a CostCache) keeps them too.
    memo: dict = field(default_factory=dict)

    @property
    def num_ops(self) -> int:
        return len(self.op)

    @property
    def num_levels(self) -> int:
        return len(self.level_starts) - 1


def event_rows(compiled: CompiledSchedule) -> tuple[list[int], list[int], list[int], list[int]]:
    """(stage, duration index, input position, lag index) per position as lists, for the one-at-a-time loop."""
    rows = compiled.memo.get("event_rows")
    if rows is None:
        rows = compiled.memo["event_rows"] = (compiled.stage.tolist(), compiled.dur.tolist(), compiled.dep.tolist(),
                                              compiled.lag.tolist())
    return rows


def compiled_schedule(cache: CostCache, schedule: str, pp: int, m: int, vpp: int = 1) -> CompiledSchedule:
    """``compile_schedule`` kept in ``cache``."""
    if schedule == RENDEZVOUS_1F1B:
        return cache.get("compiled", (schedule, pp, m, vpp), lambda: compile_rendezvous(pp, m))
    return cache.get("compiled", (schedule, pp, m, vpp), lambda: compile_schedule(schedule, pp, m, vpp))


def compile_schedule(schedule: str, pp: int, m: int, vpp: int = 1) -> CompiledSchedule:
    """Compile the op orders of ``schedule`` for ``pp`` stages, ``m`` micro-batches and ``vpp`` chunks per stage."""
    stages = order_arrays(schedule, pp, m, vpp)
    chunks = pp * vpp
    none_slot = chunks - 1
    op = np.concatenate([a for a, _, _ in stages])
    c = np.concatenate([b for _, b, _ in stages])
    j = np.concatenate([x for _, _, x in stages])
    sizes = [len(a) for a, _, _ in stages]
    n = len(op)
    # Flat position of every op key (op * chunks + chunk) * m + microbatch; key -1 (no input) reads the sentinel.
    pos_of_key = np.full(3 * chunks * m + 1, n, dtype=np.int64)
    pos_of_key[(op * chunks + c) * m + j] = np.arange(n)
    is_f, is_b = op == F, op == B
    # F needs F of the chunk before; B needs B of the chunk after (the last chunk: its own F); W its own B.
    need = np.where(is_f, np.where(c > 0, (c - 1) * m + j, -1),
                    np.where(is_b, np.where(c < chunks - 1, (chunks + c + 1) * m + j, c * m + j), (chunks + c) * m + j))
    dep_flat = pos_of_key[need]
    lag = np.where(is_f, np.where(c > 0, c - 1, none_slot), np.where(is_b & (c < chunks - 1), c, none_slot))
    return _assemble(op, c, j, sizes, dep_flat, lag, op * chunks + c, pp=pp, chunks=chunks, m=m,
                     key=(schedule, pp, m, vpp))


def compile_rendezvous(pp: int, m: int) -> CompiledSchedule:
    """DeepSpeed's 1F1B with its blocking messages (``orders.deepspeed_instructions``): sends meet receives.

    DeepSpeed's pipeline messages are synchronous (``deepspeed.runtime.pipe.p2p.send`` asserts
    ``async_op == False`` and calls ``dist.send``, or a two-rank ``dist.broadcast``; ``recv`` likewise): a
    transfer starts once both its sender and its receiver have reached it, takes the transfer time, and holds
    both until it is done. Each message is two ops. The send (op ``SEND``, on the sender) reads the receiver's
    op before the matching receive, so it ends at ``max(sender free, receiver free) + transfer``; its duration
    slot is the boundary's transfer (slots ``2 chunks + boundary``: the third block of durations carries the
    transfers, ``simulate`` and ``simulate_batch`` put them there). The receive (op ``RECV``, duration 0, the
    block's last slot) reads the send, so the receiver goes on when the transfer ends. Compute ops read only
    their stage's previous op: their input arrived with the receive before them. No lags.
    """
    streams = [deepspeed_instructions(s, pp, m) for s in range(pp)]
    sizes = [len(x) for x in streams]
    n = sum(sizes)
    first = np.cumsum([0, *sizes[:-1]]).tolist()
    where = {}  # (stage, instruction, micro-batch) -> flat position
    for s, stream in enumerate(streams):
        for i, (name, j) in enumerate(stream):
            where[s, name, j] = first[s] + i
    op, c, mb, dep, dur = (np.empty(n, dtype=np.int64) for _ in range(5))
    zero_slot = 3 * pp - 1
    for s, stream in enumerate(streams):
        for i, (name, j) in enumerate(stream):
            k = first[s] + i
            c[k], mb[k] = s, j
            if name in ("F", "B"):
                op[k], dep[k], dur[k] = (F, n, s) if name == "F" else (B, n, pp + s)
            elif name in (SEND_ACT, SEND_GRAD):
                peer, boundary = (s + 1, s) if name == SEND_ACT else (s - 1, s - 1)
                recv = where[peer, RECV_ACT if name == SEND_ACT else RECV_GRAD, j]
                op[k], dur[k] = SEND, 2 * pp + boundary
                dep[k] = recv - 1 if recv > first[peer] else n  # the receiver's op before the receive
            else:
                peer = s - 1 if name == RECV_ACT else s + 1
                op[k], dur[k] = RECV, zero_slot
                dep[k] = where[peer, SEND_ACT if name == RECV_ACT else SEND_GRAD, j]
    return _assemble(op, c, mb, sizes, dep, np.full(n, pp - 1, dtype=np.int64), dur, pp=pp, chunks=pp, m=m,
                     key=(RENDEZVOUS_1F1B, pp, m, 1))


def _assemble(op: np.ndarray, c: np.ndarray, j: np.ndarray, sizes: list[int], dep_flat: np.ndarray, lag: np.ndarray,
              dur: np.ndarray, *, pp: int, chunks: int, m: int, key: tuple) -> CompiledSchedule:
    """The compiled schedule of ops laid out stage by stage (``sizes`` per stage), sorted into levels."""
    n = len(op)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    is_f, is_b = op == F, op == B
    level = _levels(dep_flat, starts.tolist(), ends.tolist(), n)
    order = np.argsort(level, kind="stable")
    inv = np.empty(n + 1, dtype=np.int64)
    inv[order] = np.arange(n)
    inv[n] = n
    prev_flat = np.arange(-1, n - 1, dtype=np.int64)
    prev_flat[starts] = n  # a stage's first op has no predecessor
    stage = np.repeat(np.arange(pp, dtype=np.int64), sizes)
    lv = level[order]
    held = np.cumsum(is_f.astype(np.int64) - is_b)  # +1 per F, -1 per B, per stage below
    peak = tuple(max(0, int((held[a:b] - (held[a - 1] if a else 0)).max())) if b > a else 0
                 for a, b in zip(starts.tolist(), ends.tolist(), strict=True))
    level_starts = (0, *(np.flatnonzero(np.diff(lv)) + 1).tolist(), n)
    prev = inv[prev_flat[order]]
    return CompiledSchedule(
        pp=pp, chunks=chunks, m=m, op=op[order], chunk=c[order], microbatch=j[order], stage=stage[order],
        prev=prev, dep=inv[dep_flat[order]], dur=dur[order], lag=lag[order],
        level_starts=level_starts, prev_runs=_runs(prev, level_starts, n),
        last=tuple(int(inv[e - 1]) for e in ends.tolist()), peak=peak, key=key,
    )


def _runs(prev: np.ndarray, level_starts: tuple[int, ...], n: int) -> tuple[int, ...]:
    """Per level, the first predecessor position when the level's predecessors are consecutive (a slice, not a
    gather, for the batched simulator), else -1. In a steady state each stage's previous op is one level up."""
    starts = np.asarray(level_starts[:-1])
    step_ok = np.ones(len(prev), dtype=bool)
    step_ok[1:] = prev[1:] == prev[:-1] + 1
    step_ok[starts] = True  # a level's first op starts its own run
    consecutive = np.logical_and.reduceat(step_ok, starts)
    first = prev[starts]
    return tuple(np.where(consecutive & (first < n), first, -1).tolist())


def _levels(dep: np.ndarray, starts: list[int], ends: list[int], n: int) -> np.ndarray:
    """Longest-path level of every op (flat positions, stage-major); ``dep[i] == n`` means no input.

    Stages are swept forward then backward; a stage is recomputed only when a stage its ops read changed
    since (the same fixed point as sweeping every stage, reached with fewer passes).
    """
    level = np.zeros(n + 1, dtype=np.int64)  # level[n] = 0: the sentinel
    sizes = np.subtract(ends, starts)
    stage_of = np.repeat(np.arange(len(starts)), sizes)
    has_input = dep < n
    links = np.flatnonzero(np.bincount(stage_of[dep[has_input]] * len(starts) + stage_of[has_input],
                                       minlength=len(starts) ** 2))  # source * stages + reader
    readers: list[list[int]] = [[] for _ in starts]
    for link in links.tolist():
        readers[link // len(starts)].append(link % len(starts))
    spans = {s: (a, b, np.arange(b - a, dtype=np.int64), dep[a:b])
             for s, (a, b) in enumerate(zip(starts, ends, strict=True)) if b > a}
    order = list(spans) + list(spans)[::-1]
    dirty = set(spans)
    for _ in range(n + 1):  # each sweep fixes at least one more op, so n + 1 sweeps always suffice
        if not dirty:
            return level[:n]
        for s in order:
            if s not in dirty:
                continue
            dirty.discard(s)
            a, b, q, d = spans[s]
            new = q + 1 + np.maximum(np.maximum.accumulate(level[d] - q), 0)
            if not (new == level[a:b]).all():
                level[a:b] = new
                dirty.update(readers[s])
    raise AssertionError("the op orders deadlock")
