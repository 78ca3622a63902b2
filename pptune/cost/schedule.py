"""Pipeline schedule simulator: times each stage's op order with per-chunk costs and p2p lags.

Event-driven over a fixed order: every stage runs its ops in order (``pptune.cost.orders``); an op
starts when its stage is free and its input is there: F of chunk c needs F of chunk c-1 for the same
micro-batch plus the p2p transfer, B of chunk c needs B of chunk c+1 plus the transfer (the last chunk's
B needs its own F), W needs its own B. P2P transfers are lags (asynchronous send/recv), not stage work.
The internal schedule ``orders.RENDEZVOUS_1F1B`` is DeepSpeed's 1F1B with blocking messages instead: each
transfer holds its sender and its receiver from the moment both reach it (``compiled.compile_rendezvous``);
``p2p_ms`` are then the transfer times, counted neither as lags nor as stage work.

The op orders are compiled once per shape into level order (``pptune.cost.compiled``, kept in a CostCache), so a
simulation is a single O(pp * vpp * m) pass of plain Python; uniform stages without communication under
GPipe or 1F1B use the closed form, which ``tests/cost`` checks against the event loop. Many simulations
of one shape at once: ``pptune.cost.sim_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pptune.cost.cache import CostCache
from pptune.cost.compiled import CompiledSchedule, compiled_schedule, event_rows
from pptune.cost.orders import RENDEZVOUS_1F1B
from pptune.cost.types import TimelineOp
from pptune.errors import ConfigError
from pptune.parallel import SCHEDULES
from pptune.target_checks import raise_first, schedule_violations

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


def simulate(fwd_ms: Sequence[float], bwd_ms: Sequence[float], *, schedule: str, num_microbatches: int,
             p2p_ms: float | Sequence[float] = 0.0, vpp: int = 1, timeline: bool = False,
             w_ms: Sequence[float] | None = None, cache: CostCache | None = None) -> ScheduleResult:
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
        cache: keeps the compiled op order for later calls (a fresh one when not given).

    Returns:
        A ScheduleResult.
    """
    chunks = len(fwd_ms)
    rendezvous = schedule == RENDEZVOUS_1F1B
    if schedule not in SCHEDULES and not rendezvous:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if len(bwd_ms) != chunks or chunks % vpp:
        raise ValueError(f"{chunks} forward and {len(bwd_ms)} backward times for vpp {vpp}")
    pp, m = chunks // vpp, num_microbatches
    if m < 1:
        raise ConfigError(f"num_microbatches must be positive, got {m}")
    raise_first(schedule_violations("1f1b" if rendezvous else schedule, pp=pp, vpp=vpp, num_microbatches=m))  # pptune.target_checks' wording
    lags = [float(p2p_ms)] * (chunks - 1) if isinstance(p2p_ms, (int, float)) else [float(x) for x in p2p_ms]
    if len(lags) != chunks - 1:
        raise ValueError(f"p2p_ms needs {chunks - 1} values, got {len(lags)}")
    fwd = [float(x) for x in fwd_ms]
    if schedule == "zb_h1":
        w = [W_SHARE_OF_BACKWARD * float(x) for x in bwd_ms] if w_ms is None else [float(x) for x in w_ms]
        bwd = [float(b) - x for b, x in zip(bwd_ms, w, strict=True)]
    elif rendezvous:  # the transfers in the third block of durations (compile_rendezvous), no lags
        w, lags = lags + [0.0], [0.0] * (chunks - 1)
        bwd = [float(x) for x in bwd_ms]
    else:
        w = [0.0] * chunks
        bwd = [float(x) for x in bwd_ms]
    plan = compiled_schedule(CostCache() if cache is None else cache, schedule, pp, m, vpp)
    stage_work = [0.0] * pp
    for c in range(chunks):
        stage_work[c % pp] += m * (fwd[c] + bwd[c]) if rendezvous else m * (fwd[c] + bwd[c] + w[c])
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
            TimelineOp(stage=stage, chunk=c, microbatch=j, op=_OP_NAMES[op], start_ms=ends[k] - dur[d], end_ms=ends[k])
            for k, (stage, d, op, c, j) in enumerate(zip(plan.stage.tolist(), plan.dur.tolist(), plan.op.tolist(),
                                                         plan.chunk.tolist(), plan.microbatch.tolist(), strict=True))
            if op < len(_OP_NAMES)  # a blocking message's send and receive are no compute op
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


def _run(plan: CompiledSchedule, dur: list[float], lag: list[float]) -> list[float]:
    """End time of every op in level order (plus a trailing 0.0 that ops without an input read)."""
    stages, durs, deps, lags = event_rows(plan)
    end = [0.0] * (len(stages) + 1)
    free = [0.0] * plan.pp
    k = 0
    for s, d, dep, lg in zip(stages, durs, deps, lags, strict=True):  # the hot loop: plain list indexing
        t = free[s]
        ready = end[dep] + lag[lg]
        if ready > t:
            t = ready
        free[s] = end[k] = t + dur[d]
        k += 1
    return end
