"""Invariants every pipeline schedule must meet: closed forms, no overlap, dependencies, lower bounds."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

import pytest

from pptune.cost.memory import inflight_units
from pptune.cost.orders import stage_orders
from pptune.cost.schedule import simulate
from pptune.parallel import SCHEDULES, ParallelConfig

SHAPES = [(2, 4), (4, 8), (4, 12), (3, 6), (8, 16)]  # (pp, m), m a multiple of pp


def _vpp(schedule: str) -> int:
    return 2 if schedule == "interleaved_1f1b" else 1


def _uniform(schedule: str, pp: int, m: int, t_f: float = 1.0, t_b: float = 2.0, **kw):
    v = _vpp(schedule)
    return simulate([t_f / v] * (pp * v), [t_b / v] * (pp * v), schedule=schedule, num_microbatches=m, vpp=v, **kw)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize(("pp", "m"), SHAPES)
def test_uniform_stages_meet_the_closed_form(schedule, pp, m):
    t_f, t_b = 1.0, 2.0
    res = _uniform(schedule, pp, m, timeline=True)
    ideal = m * (t_f + t_b)
    if schedule in ("gpipe", "1f1b"):
        assert res.step_ms == pytest.approx((m + pp - 1) * (t_f + t_b))
        assert res.bubble_fraction == pytest.approx((pp - 1) / (m + pp - 1))
    elif schedule == "interleaved_1f1b":
        # Megatron (Narayanan et al. SC'21, Sec. 2.2.2): bubble time / ideal time = (p - 1) / (v m).
        assert (res.step_ms - ideal) / ideal == pytest.approx((pp - 1) / (_vpp(schedule) * m))
    else:
        onef = _uniform("1f1b", pp, m)
        assert res.bubble_fraction <= onef.bubble_fraction + 1e-12
        # Qi et al.: ZB-H1's bubble is (p - 1)(T_F + T_B - T_W); here T_B = T_W = 1.
        assert res.step_ms - ideal == pytest.approx((pp - 1) * (t_f + 1.0 - 1.0))


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_closed_form_shortcut_equals_the_event_loop(schedule):
    for pp, m in SHAPES + [(1, 5), (5, 3)]:
        fast = _uniform(schedule, pp, m)
        loop = _uniform(schedule, pp, m, timeline=True)
        assert fast.step_ms == loop.step_ms and fast.end_ms == loop.end_ms and fast.busy_ms == loop.busy_ms


def _random_case(schedule: str, seed: int):
    rng = random.Random(seed)
    pp = rng.choice([2, 3, 4, 6])
    m = pp * rng.choice([1, 2, 3])
    v = _vpp(schedule)
    chunks = pp * v
    fwd = [rng.uniform(0.5, 2.0) for _ in range(chunks)]
    bwd = [f * rng.uniform(1.5, 3.0) for f in fwd]
    p2p = [rng.uniform(0.0, 0.3) for _ in range(chunks - 1)]
    return pp, m, v, fwd, bwd, p2p


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("seed", range(6))
def test_timeline_respects_resources_and_dependencies(schedule, seed):
    pp, m, v, fwd, bwd, p2p = _random_case(schedule, seed)
    res = simulate(fwd, bwd, schedule=schedule, num_microbatches=m, vpp=v, p2p_ms=p2p, timeline=True)
    chunks = pp * v
    ops = {(t.op, t.chunk, t.microbatch): t for t in res.timeline}
    expected = {"F", "B", "W"} if schedule == "zb_h1" else {"F", "B"}
    assert len(ops) == len(res.timeline) == len(expected) * chunks * m  # each op exactly once
    per_stage = defaultdict(list)
    for t in res.timeline:
        assert t.stage == t.chunk % pp
        assert t.end_ms >= t.start_ms >= 0
        per_stage[t.stage].append(t)
    for boxes in per_stage.values():  # no stage runs two ops at once
        boxes.sort(key=lambda t: t.start_ms)
        for a, b in itertools.pairwise(boxes):
            assert b.start_ms >= a.end_ms - 1e-9
    eps = 1e-9
    for (op, c, j), t in ops.items():
        if op == "F" and c > 0:
            assert t.start_ms >= ops[("F", c - 1, j)].end_ms + p2p[c - 1] - eps
        if op == "B":
            assert t.start_ms >= ops[("F", c, j)].end_ms - eps  # never before its own forward
            if c < chunks - 1:
                assert t.start_ms >= ops[("B", c + 1, j)].end_ms + p2p[c] - eps
        if op == "W":
            assert t.start_ms >= ops[("B", c, j)].end_ms - eps
    assert res.step_ms == pytest.approx(max(t.end_ms for t in res.timeline))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("seed", range(6))
def test_step_is_at_least_the_critical_path(schedule, seed):
    pp, m, v, fwd, bwd, p2p = _random_case(schedule, seed)
    res = simulate(fwd, bwd, schedule=schedule, num_microbatches=m, vpp=v, p2p_ms=p2p)
    one_microbatch = sum(fwd) + sum(bwd) + 2 * sum(p2p)
    busiest = max(m * sum(fwd[c] + bwd[c] for c in range(s, pp * v, pp)) for s in range(pp))
    assert res.step_ms >= one_microbatch - 1e-9
    assert res.step_ms >= busiest - 1e-9
    assert max(res.busy_ms) == pytest.approx(busiest)
    assert all(i >= -1e-9 for i in res.idle_ms)
    assert res.bubble_fraction == pytest.approx(1 - sum(res.busy_ms) / (pp * res.step_ms))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_bubble_falls_as_microbatches_grow(schedule):
    pp = 4
    fractions = [_uniform(schedule, pp, m).bubble_fraction for m in (4, 8, 16, 32, 64)]
    assert all(b < a for a, b in itertools.pairwise(fractions)), fractions


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize(("pp", "m"), SHAPES + [(4, 4)])
def test_simulated_peak_inflight_matches_the_memory_model(schedule, pp, m):
    v = _vpp(schedule)
    config = ParallelConfig(pp=pp, num_microbatches=m, schedule=schedule, vpp=v, target="megatron")
    res = _uniform(schedule, pp, m)
    assert res.peak_inflight == tuple(inflight_units(config, s) for s in range(pp))


def test_zb_h1_defers_weight_gradients_into_the_cool_down():
    orders = stage_orders("zb_h1", 4, 8)
    # The last stage holds back 3 W passes, the first none (torch's num_1f1b_microbatches = rank).
    last = orders[3]
    assert [op for op, _, _ in last[-3:]] == [2, 2, 2]
    first_b = next(i for i, (op, _, _) in enumerate(orders[0]) if op == 1)
    assert orders[0][first_b + 1][0] == 2
