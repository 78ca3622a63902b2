"""The op order each pipeline stage executes, per schedule: lists of ``(op, chunk, microbatch)``.

``op`` is 0 forward (F), 1 backward (B: input gradient; the whole backward unless W is split off),
2 weight gradient (W). ``chunk`` is the global model chunk (``vpp * pp`` of them, chunk ``c`` on stage
``c % pp``). Orders depend only on the schedule's shape, so they are cached; the simulator times them.
"""

from __future__ import annotations

import functools

F, B, W = 0, 1, 2
OrderOp = tuple[int, int, int]  # (op, chunk, microbatch)


@functools.lru_cache(maxsize=1024)
def stage_orders(schedule: str, pp: int, m: int, vpp: int = 1) -> tuple[tuple[OrderOp, ...], ...]:
    """The op order of every stage (index = stage) for one schedule shape."""
    if schedule == "gpipe":
        return tuple(_gpipe(s, pp, m) for s in range(pp))
    if schedule == "1f1b":
        return tuple(_one_f_one_b(s, pp, m) for s in range(pp))
    if schedule == "interleaved_1f1b":
        return tuple(_interleaved(s, pp, m, vpp) for s in range(pp))
    if schedule == "zb_h1":
        return tuple(_zb_h1(s, pp, m) for s in range(pp))
    raise ValueError(f"unknown schedule {schedule!r}")


def _gpipe(s: int, pp: int, m: int) -> tuple[OrderOp, ...]:
    # GPipe (Huang et al. 2019): all forwards, then all backwards; backwards in micro-batch order as
    # torch.distributed.pipelining.ScheduleGPipe runs them.
    return tuple([(F, s, j) for j in range(m)] + [(B, s, j) for j in range(m)])


def _one_f_one_b(s: int, pp: int, m: int) -> tuple[OrderOp, ...]:
    """PipeDream-Flush (Narayanan et al. 2021), DeepSpeed's TrainSchedule and Megatron's 1F1B.

    Warm-up: ``pp - s - 1`` forwards; steady state: one forward then one backward; cool-down: the
    remaining backwards. (tests/cost compare it with DeepSpeed's own instruction stream.)
    """
    warmup = min(pp - s - 1, m)
    ops: list[OrderOp] = [(F, s, j) for j in range(warmup)]
    for i in range(m - warmup):
        ops += [(F, s, warmup + i), (B, s, i)]
    ops += [(B, s, j) for j in range(m - warmup, m)]
    return tuple(ops)


def _interleaved(s: int, pp: int, m: int, v: int) -> tuple[OrderOp, ...]:
    """Megatron's interleaved 1F1B (``forward_backward_pipelining_with_interleaving``, group size pp).

    Virtual micro-batch k runs model chunk ``(k % (pp*v)) // pp`` of micro-batch
    ``(k // (pp*v)) * pp + k % pp``; backwards walk the chunks in reverse. Warm-up:
    ``(pp - s - 1) * 2 + (v - 1) * pp`` forwards, or all of them when that reaches ``m * v``.
    Needs ``m % pp == 0`` (Megatron's default microbatch group size).
    """
    assert m % pp == 0, "interleaved 1F1B needs num_microbatches % pp == 0"
    total = m * v

    def unit(k: int, forward: bool) -> tuple[int, int]:
        in_group = k % (pp * v)
        local = in_group // pp
        if not forward:
            local = v - 1 - local
        return local * pp + s, (k // (pp * v)) * pp + in_group % pp

    warmup = min((pp - s - 1) * 2 + (v - 1) * pp, total)
    ops: list[OrderOp] = []
    for k in range(warmup):
        c, j = unit(k, True)
        ops.append((F, c, j))
    for i in range(total - warmup):
        c, j = unit(warmup + i, True)
        ops.append((F, c, j))
        c, j = unit(i, False)
        ops.append((B, c, j))
    for k in range(total - warmup, total):
        c, j = unit(k, False)
        ops.append((B, c, j))
    return tuple(ops)


def _zb_h1(s: int, pp: int, m: int) -> tuple[OrderOp, ...]:
    """ZB-H1 (Qi et al., ICLR'24 "Zero Bubble Pipeline Parallelism", Sec. 3.1).

    The 1F1B order with each backward split into B and W. Stage ``s`` postpones its first ``s`` W
    passes, and the W passes it still owes fill the cool-down, where 1F1B idles; peak activation
    memory stays that of 1F1B. Same construction as ``torch.distributed.pipelining``'s
    ScheduleInterleavedZeroBubble with one chunk per rank (``num_1f1b_microbatches = rank``).
    """
    warmup = min(pp - s - 1, m)
    ops: list[OrderOp] = [(F, s, j) for j in range(warmup)]
    next_b = next_w = 0

    def backward(step: int) -> None:
        nonlocal next_b, next_w
        ops.append((B, s, next_b))
        next_b += 1
        if step - warmup >= s:  # W of the oldest micro-batch whose B has run
            ops.append((W, s, next_w))
            next_w += 1

    for i in range(m - warmup):
        ops.append((F, s, warmup + i))
        backward(warmup + i)
    for k in range(warmup):
        backward(m + k)
    ops += [(W, s, j) for j in range(next_w, m)]
    return tuple(ops)


def peak_inflight(order: tuple[OrderOp, ...]) -> int:
    """Most forward units whose backward B has not yet run (activations held), along one stage's order."""
    live = peak = 0
    for op, _, _ in order:
        if op == F:
            live += 1
            peak = max(peak, live)
        elif op == B:
            live -= 1
    return peak
