"""Pipeline schedule simulator: times each stage's op order with per-chunk costs and p2p lags.

Event-driven over a fixed order: every stage runs its ops in order (``pptune.cost.orders``); an op
starts when its stage is free and its input is there: F of chunk c needs F of chunk c-1 for the same
micro-batch plus the p2p transfer, B of chunk c needs B of chunk c+1 plus the transfer (the last chunk's
B needs its own F), W needs its own B. P2P transfers are lags (asynchronous send/recv), not stage work.

The op orders are compiled once per shape into a topological sequence (cached), so a simulation is a
single O(pp * vpp * m) pass of plain Python; uniform stages without communication under GPipe or 1F1B
use the closed form, which ``tests/cost`` checks against the event loop.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from pptune.cost.orders import B, F, peak_inflight, stage_orders
from pptune.cost.types import TimelineOp
from pptune.errors import ConfigError
from pptune.parallel import SCHEDULES

# ZB-H1 without a measured split: the weight-gradient pass W takes this share of the backward.
# For a GEMM y = xA the input and weight gradients are one GEMM each of the forward's size, so the
# backward halves evenly (Qi et al. ICLR'24 assume T_B = T_W = T_F in their analysis).
W_SHARE_OF_BACKWARD = 0.5
_OP_NAMES = ("F", "B", "W")


@dataclass(frozen=True, kw_only=True, slots=True)
class ScheduleResult:
    """The simulated pipeline step (compute and p2p only; DP/optimizer come later in estimate)."""

    step_ms: float  # makespan: last op end over all stages
    bubble_fraction: float  # 1 - sum(busy) / (pp * step)
    busy_ms: tuple[float, ...]  # per stage: time spent running ops
    idle_ms: tuple[float, ...]  # per stage: step - busy
    end_ms: tuple[float, ...]  # per stage: end of its last op (where its gradient reduction can start)
    peak_inflight: tuple[int, ...]  # per stage: most forward units whose B has not run (chunk-micro-batches)
    timeline: tuple[TimelineOp, ...] = ()


@dataclass(frozen=True, slots=True)
class _Plan:
    """A schedule shape compiled into a dependency-respecting sequence of ops.

    Each row is (stage, duration index = op * chunks + chunk, index of the op whose end this op waits for
    (the trailing zero slot when none), lag index = chunk boundary (the zero slot when none)).
    """

    rows: tuple[tuple[int, int, int, int], ...]
    ops: tuple[tuple[int, int, int], ...]  # (op, chunk, microbatch)
    last: tuple[int, ...]  # per stage: index of its last op
    peak: tuple[int, ...]


def simulate(fwd_ms: Sequence[float], bwd_ms: Sequence[float], *, schedule: str, num_microbatches: int,
             p2p_ms: float | Sequence[float] = 0.0, vpp: int = 1, timeline: bool = False,
             w_ms: Sequence[float] | None = None) -> ScheduleResult:
    """Simulate one pipeline step.

    Args:
        fwd_ms: forward time per micro-batch of each chunk, ``pp * vpp`` values (chunk c on stage c % pp).
        bwd_ms: full backward time (input + weight gradient, recompute included) per chunk.
        schedule: ``gpipe``, ``1f1b``, ``interleaved_1f1b`` or ``zb_h1``.
        num_microbatches: micro-batches per step (m).
        p2p_ms: transfer time between chunk c and c + 1 (one value for all boundaries, or ``chunks - 1``).
        vpp: model chunks per stage (interleaved_1f1b only).
        timeline: also return every op's start and end.
        w_ms: the weight-gradient share of ``bwd_ms`` per chunk (zb_h1); default ``W_SHARE_OF_BACKWARD``.

    Returns:
        A ScheduleResult.
    """
    chunks = len(fwd_ms)
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if len(bwd_ms) != chunks or chunks % vpp:
        raise ValueError(f"{chunks} forward and {len(bwd_ms)} backward times for vpp {vpp}")
    pp, m = chunks // vpp, num_microbatches
    if m < 1:
        raise ConfigError(f"num_microbatches must be positive, got {m}")
    if schedule == "interleaved_1f1b" and m % pp:
        raise ConfigError(f"interleaved_1f1b needs micro-batches {m} to be a multiple of pp {pp}")
    if vpp > 1 and schedule != "interleaved_1f1b":
        raise ConfigError(f"vpp {vpp} > 1 needs schedule interleaved_1f1b, got {schedule}")
    lags = [float(p2p_ms)] * (chunks - 1) if isinstance(p2p_ms, (int, float)) else [float(x) for x in p2p_ms]
    if len(lags) != chunks - 1:
        raise ValueError(f"p2p_ms needs {chunks - 1} values, got {len(lags)}")
    fwd = [float(x) for x in fwd_ms]
    if schedule == "zb_h1":
        w = [W_SHARE_OF_BACKWARD * float(x) for x in bwd_ms] if w_ms is None else [float(x) for x in w_ms]
        bwd = [float(b) - x for b, x in zip(bwd_ms, w, strict=True)]
    else:
        w = [0.0] * chunks
        bwd = [float(x) for x in bwd_ms]
    plan = _compile(schedule, pp, m, vpp)
    stage_work = [0.0] * pp
    for c in range(chunks):
        stage_work[c % pp] += m * (fwd[c] + bwd[c] + w[c])
    if not timeline and schedule in ("gpipe", "1f1b") and _uniform(fwd, bwd, lags):
        # Closed form (uniform stages, no comm): (m + pp - 1)(t_f + t_b); stage s ends s * t_b early.
        step = (m + pp - 1) * (fwd[0] + bwd[0])
        ends = tuple(step - s * bwd[0] for s in range(pp))
        return _result(step, stage_work, ends, plan.peak, ())
    dur = fwd + bwd + w
    ends = _run(plan, dur, lags + [0.0])
    stage_end = tuple(ends[i] for i in plan.last)
    step = max(stage_end)
    tl: tuple[TimelineOp, ...] = ()
    if timeline:
        tl = tuple(
            TimelineOp(stage=row[0], chunk=c, microbatch=j, op=_OP_NAMES[op], start_ms=ends[k] - dur[row[1]],
                       end_ms=ends[k])
            for k, (row, (op, c, j)) in enumerate(zip(plan.rows, plan.ops, strict=True))
        )
    return _result(step, stage_work, stage_end, plan.peak, tl)


def _uniform(fwd: list[float], bwd: list[float], lags: list[float]) -> bool:
    return min(fwd) == max(fwd) and min(bwd) == max(bwd) and not any(lags)


def _result(step: float, work: list[float], ends: tuple[float, ...], peak: tuple[int, ...],
            tl: tuple[TimelineOp, ...]) -> ScheduleResult:
    pp = len(work)
    bubble = 1.0 - sum(work) / (pp * step) if step > 0 else 0.0
    return ScheduleResult(step_ms=step, bubble_fraction=bubble, busy_ms=tuple(work),
                          idle_ms=tuple(step - x for x in work), end_ms=ends, peak_inflight=peak, timeline=tl)


def _run(plan: _Plan, dur: list[float], lag: list[float]) -> list[float]:
    """End time of every op (plus a trailing 0.0 that ops without a dependency read)."""
    end = [0.0] * (len(plan.rows) + 1)
    free = [0.0] * len(plan.last)
    k = 0
    for s, d, dep, lg in plan.rows:  # the hot loop: kept to plain list indexing
        t = free[s]
        ready = end[dep] + lag[lg]
        if ready > t:
            t = ready
        free[s] = end[k] = t + dur[d]
        k += 1
    return end


@functools.lru_cache(maxsize=1024)
def _compile(schedule: str, pp: int, m: int, vpp: int) -> _Plan:
    """Order all stages' ops so that each op comes after its stage predecessor and its dependency.

    Ops are keyed by the integer ``(op * chunks + chunk) * m + microbatch``; stages are visited round-robin,
    each advancing until its next op's dependency has not been placed yet.
    """
    orders = stage_orders(schedule, pp, m, vpp)
    chunks = pp * vpp
    zero_slot = chunks - 1
    total = sum(len(o) for o in orders)
    prepared = []
    for order in orders:
        rows = []
        for op, c, j in order:
            if op == F:
                need, slot = ((c - 1) * m + j, c - 1) if c > 0 else (-1, zero_slot)
            elif op == B:
                need, slot = (((chunks + c + 1) * m + j), c) if c < chunks - 1 else (c * m + j, zero_slot)
            else:
                need, slot = (chunks + c) * m + j, zero_slot
            rows.append(((op * chunks + c) * m + j, need, slot, op * chunks + c))
        prepared.append(rows)
    placed = [-1] * (3 * chunks * m)
    out: list[tuple[int, int, int, int]] = []
    keys: list[int] = []
    ptr = [0] * pp
    while len(out) < total:
        progress = False
        for s in range(pp):
            rows, p = prepared[s], ptr[s]
            while p < len(rows):
                key, need, slot, d = rows[p]
                dep = total if need < 0 else placed[need]
                if dep < 0:
                    break
                placed[key] = len(out)
                out.append((s, d, dep, slot))
                keys.append(key)
                p += 1
            if p != ptr[s]:
                ptr[s], progress = p, True
        assert progress, f"{schedule} order deadlocks for pp={pp} m={m} vpp={vpp}"
    last_of = [-1] * pp
    for k, row in enumerate(out):
        last_of[row[0]] = k
    ops = tuple((key // (chunks * m), (key // m) % chunks, key % m) for key in keys)
    peak = tuple(peak_inflight(o) for o in orders)
    return _Plan(tuple(out), ops, tuple(last_of), peak)
