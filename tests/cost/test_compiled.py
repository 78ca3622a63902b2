"""Compiled schedules: numpy op orders equal stage_orders, levels are longest-path levels, the event loop is exact."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pptune.cost.compiled import compile_schedule
from pptune.cost.orders import order_arrays, stage_orders
from pptune.cost.schedule import simulate
from pptune.parallel import SCHEDULES


def _shapes(schedule: str, max_pp: int = 6, max_m: int = 12):
    for pp in range(1, max_pp + 1):
        for m in range(1, max_m + 1):
            for v in ((1, 2, 3) if schedule == "interleaved_1f1b" else (1,)):
                if schedule == "interleaved_1f1b" and m % pp:
                    continue
                yield pp, m, v


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_order_arrays_equal_stage_orders(schedule):
    for pp, m, v in _shapes(schedule, max_pp=8, max_m=20):
        for order, (op, c, j) in zip(stage_orders(schedule, pp, m, v), order_arrays(schedule, pp, m, v), strict=True):
            assert list(zip(op.tolist(), c.tolist(), j.tolist(), strict=True)) == list(order), (pp, m, v)


def _inputs(schedule: str, pp: int, m: int, v: int) -> dict:
    """Map each op to the op it waits for (None: nothing), as the simulator's module docstring defines it."""
    chunks = pp * v
    out = {}
    for order in stage_orders(schedule, pp, m, v):
        for op, c, j in order:
            if op == 0:
                out[(op, c, j)] = (0, c - 1, j) if c > 0 else None
            elif op == 1:
                out[(op, c, j)] = (1, c + 1, j) if c < chunks - 1 else (0, c, j)
            else:
                out[(op, c, j)] = (1, c, j)
    return out


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_levels_are_longest_path_levels(schedule):
    for pp, m, v in _shapes(schedule):
        cs = compile_schedule(schedule, pp, m, v)
        level = np.zeros(cs.num_ops, dtype=int)
        for i, (a, b) in enumerate(zip(cs.level_starts[:-1], cs.level_starts[1:], strict=True)):
            level[a:b] = i + 1
        at = {(o, c, j): k for k, (o, c, j) in enumerate(zip(cs.op.tolist(), cs.chunk.tolist(),
                                                              cs.microbatch.tolist(), strict=True))}
        inputs = _inputs(schedule, pp, m, v)
        assert len(at) == len(inputs) == cs.num_ops
        for order in stage_orders(schedule, pp, m, v):
            before = 0
            for unit in order:
                need = inputs[unit]
                expected = max(before, level[at[need]] if need else 0) + 1
                assert level[at[unit]] == expected, (schedule, pp, m, v, unit)
                assert cs.dep[at[unit]] == (at[need] if need else cs.num_ops)
                before = expected


def _reference(schedule, pp, m, v, fwd, bwd, w, lags):
    """Every op's end by fixed-point iteration over the definition (no compile, no ordering)."""
    chunks = pp * v
    inputs = _inputs(schedule, pp, m, v)
    dur = {0: fwd, 1: bwd, 2: w}
    end: dict = {}
    orders = stage_orders(schedule, pp, m, v)
    while len(end) < len(inputs):
        for order in orders:
            t = 0.0
            for unit in order:
                need = inputs[unit]
                if need is not None and need not in end:
                    break
                lag = 0.0
                if need is not None and unit[0] == 0:
                    lag = lags[unit[1] - 1]
                elif need is not None and unit[0] == 1 and unit[1] < chunks - 1:
                    lag = lags[unit[1]]
                ready = end[need] + lag if need is not None else 0.0
                t = max(t, ready) + dur[unit[0]][unit[1]]
                end[unit] = t
    return end


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("seed", range(4))
def test_event_loop_equals_the_definition(schedule, seed):
    rng = random.Random(seed)
    pp = rng.choice((2, 3, 4, 5))
    m = pp * rng.choice((1, 2, 3)) if schedule == "interleaved_1f1b" else rng.randint(1, 10)
    v = 2 if schedule == "interleaved_1f1b" else 1
    chunks = pp * v
    fwd = [rng.uniform(0.5, 2.0) for _ in range(chunks)]
    bwd = [rng.uniform(1.0, 4.0) for _ in range(chunks)]
    lags = [rng.uniform(0.0, 0.5) for _ in range(chunks - 1)]
    w = [0.5 * b for b in bwd] if schedule == "zb_h1" else [0.0] * chunks
    res = simulate(fwd, bwd, schedule=schedule, num_microbatches=m, vpp=v, p2p_ms=lags, timeline=True)
    b_only = [b - x for b, x in zip(bwd, w, strict=True)] if schedule == "zb_h1" else bwd
    ref = _reference(schedule, pp, m, v, fwd, b_only, w, lags)
    got = {({"F": 0, "B": 1, "W": 2}[t.op], t.chunk, t.microbatch): t.end_ms for t in res.timeline}
    assert got == ref  # exact: the same additions and maxima
