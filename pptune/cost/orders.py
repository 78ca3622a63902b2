"""The op order each pipeline stage executes, per schedule: lists of ``(op, chunk, microbatch)``.

``op`` is 0 forward (F), 1 backward (B: input gradient; the whole backward unless W is split off),
2 weight gradient (W). ``chunk`` is the global model chunk (``vpp * pp`` of them, chunk ``c`` on stage
``c % pp``). Orders depend only on the schedule's shape; ``compiled`` turns them into the simulator's level order.
"""

from __future__ import annotations

import itertools

import numpy as np

F, B, W = 0, 1, 2
OrderOp = tuple[int, int, int]  # (op, chunk, microbatch)


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


def order_arrays(schedule: str, pp: int, m: int, vpp: int = 1) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """``stage_orders`` as numpy arrays per stage: (op, chunk, microbatch), built without a Python loop per op.

    GPipe, 1F1B and interleaved 1F1B are generated vectorised (tests/cost check them against ``stage_orders``);
    ZB-H1 converts ``stage_orders``.
    """
    if schedule == "zb_h1":
        out = []
        for order in stage_orders(schedule, pp, m, vpp):
            a = np.fromiter(itertools.chain.from_iterable(order), dtype=np.int64, count=3 * len(order)).reshape(-1, 3)
            out.append((a[:, 0], a[:, 1], a[:, 2]))
        return tuple(out)
    if schedule == "gpipe":
        op = np.repeat(np.array([F, B], dtype=np.int64), m)
        j = np.tile(np.arange(m, dtype=np.int64), 2)
        return tuple((op, np.full(2 * m, s, dtype=np.int64), j) for s in range(pp))
    if schedule not in ("1f1b", "interleaved_1f1b"):
        raise ValueError(f"unknown schedule {schedule!r}")
    # Every stage at once: row s of each (pp, ops) array is stage s's order.
    stage = np.arange(pp, dtype=np.int64)[:, None]
    if schedule == "1f1b":
        total = m
        warmup = np.minimum(pp - stage - 1, m)
        k = np.arange(total, dtype=np.int64)[None, :]
        f_chunk = b_chunk = np.broadcast_to(stage, (pp, total))
        f_mb = b_mb = np.broadcast_to(k, (pp, total))
    else:
        assert m % pp == 0, "interleaved 1F1B needs num_microbatches % pp == 0"
        total = m * vpp
        warmup = np.minimum((pp - stage - 1) * 2 + (vpp - 1) * pp, total)
        k = np.arange(total, dtype=np.int64)[None, :]
        in_group = k % (pp * vpp)
        local = in_group // pp
        f_chunk, b_chunk = local * pp + stage, (vpp - 1 - local) * pp + stage
        f_mb = b_mb = np.broadcast_to((k // (pp * vpp)) * pp + in_group % pp, (pp, total))
    op, chunk, mb = _one_f_one_b_arrays(total, warmup, f_chunk, f_mb, b_chunk, b_mb)
    return tuple((op[s], chunk[s], mb[s]) for s in range(pp))


def _one_f_one_b_arrays(total: int, warmup: np.ndarray, f_chunk: np.ndarray, f_mb: np.ndarray, b_chunk: np.ndarray,
                        b_mb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warm-up forwards, then forward k + warmup / backward k pairs, then the remaining backwards.

    One row per stage: ``warmup`` is (stages, 1), the chunk and micro-batch arrays (stages, total).
    """
    steady = total - warmup
    # Position of forward unit k and backward unit k in the stage's order.
    k = np.arange(total, dtype=np.int64)[None, :]
    f_pos = np.where(k < warmup, k, warmup + 2 * (k - warmup))
    b_pos = np.where(k < steady, warmup + 2 * k + 1, total + k)
    rows = warmup.shape[0]
    op = np.empty((rows, 2 * total), dtype=np.int64)
    chunk = np.empty((rows, 2 * total), dtype=np.int64)
    mb = np.empty((rows, 2 * total), dtype=np.int64)
    stage = np.arange(rows)[:, None]
    for arr, f, b in ((op, F, B), (chunk, f_chunk, b_chunk), (mb, f_mb, b_mb)):
        arr[stage, f_pos] = f
        arr[stage, b_pos] = b
    return op, chunk, mb


# DeepSpeed's pipeline engine with its blocking point-to-point messages (``RENDEZVOUS_1F1B``): every stage runs
# an instruction stream in which each message is a send on one stage paired with the receive on its neighbour.
RENDEZVOUS_1F1B = "1f1b_rendezvous"  # an internal shape name: the 1F1B order with DeepSpeed's message pairing
SEND_ACT, RECV_ACT, SEND_GRAD, RECV_GRAD = "send_act", "recv_act", "send_grad", "recv_grad"
Instruction = tuple[str, int]  # ("F" | "B" | one of the four messages, micro-batch)


def deepspeed_instructions(s: int, pp: int, m: int) -> tuple[Instruction, ...]:
    """Stage ``s``'s instruction stream under DeepSpeed's TrainSchedule (deepspeed/runtime/pipe/schedule.py).

    The schedule runs ``2 (m + pp - 1)`` steps; in step ``t`` a stage whose parity equals ``t``'s runs a
    forward, the others a backward, of the micro-batch the step maps to (none when it is out of range). Before
    a forward the stage sends the input gradient of its previous step's micro-batch upstream (``SendGrad``) and
    receives this micro-batch's activation (``RecvActivation``); before a backward it receives this
    micro-batch's output gradient (``RecvGrad``) and sends its previous step's output downstream
    (``SendActivation``): DeepSpeed 0.19.8's order (older releases put each step's receive and send the other
    way round; for uniform stages both give the same step, checked in tests/cost). The F/B order equals
    ``_one_f_one_b`` (tests/cost/test_schedule_deepspeed.py checks both against DeepSpeed's own stream).
    """
    ops: list[Instruction] = []
    prev = -1
    for step in range(2 * (m + pp - 1)):
        forward = step % 2 == s % 2
        if forward:
            j = (step - s % 2) // 2 - s // 2
        elif step % 2 == 0:  # an odd stage's backward on an even step
            j = step // 2 - pp + (s + 1) // 2
        else:
            j = (step - 1) // 2 - pp + 1 + s // 2
        if forward and s > 0:
            if 0 <= prev < m:
                ops.append((SEND_GRAD, prev))
            if 0 <= j < m:
                ops.append((RECV_ACT, j))
        elif not forward and s < pp - 1:
            if 0 <= j < m:
                ops.append((RECV_GRAD, j))
            if 0 <= prev < m:
                ops.append((SEND_ACT, prev))
        if 0 <= j < m:
            ops.append(("F" if forward else "B", j))
        prev = j
    return tuple(ops)
