"""Steady states: the repeating levels each schedule has, and skipping them agrees with the event loop."""

from __future__ import annotations

import numpy as np
import pytest

from pptune.cost import sim_batch
from pptune.cost.compiled import compile_schedule
from pptune.cost.schedule import simulate
from pptune.cost.steady import steady_state


@pytest.mark.parametrize(("shape", "period"), [(("1f1b", 8, 96, 1), 2), (("zb_h1", 8, 96, 1), 3),
                                               (("interleaved_1f1b", 4, 64, 2), 16), (("gpipe", 4, 120, 1), 1)])
def test_each_schedule_repeats_with_its_period(shape, period):
    compiled = compile_schedule(*shape)
    steady = steady_state(compiled)
    assert steady is not None and steady.period == period
    starts = compiled.level_starts
    a, b = starts[steady.copy_first], starts[steady.copy_end]
    q = np.arange(a, b)
    # the copied ops are the same ops (stage, op, chunk) one period later, reading shifted inputs
    for name in ("stage", "op", "chunk", "dur", "lag"):
        assert np.array_equal(getattr(compiled, name)[q], getattr(compiled, name)[q - steady.shift]), name
    assert np.array_equal(compiled.prev[q], compiled.prev[q - steady.shift] + steady.shift)
    assert np.all(compiled.microbatch[q] > compiled.microbatch[q - steady.shift])


def test_small_shapes_have_none():
    assert steady_state(compile_schedule("1f1b", 4, 8, 1)) is None


@pytest.mark.parametrize("shape", [("1f1b", 16, 160, 1), ("interleaved_1f1b", 8, 64, 2), ("zb_h1", 8, 96, 1)])
def test_skipping_the_steady_state_agrees_with_the_event_loop(shape, skipped_rows):
    schedule, pp, m, v = shape
    chunks = pp * v
    rng = np.random.default_rng(5)
    k = 12
    # Equal middle stages, heavier first and last (embedding, head), equal p2p: pipelines that settle.
    fwd = np.repeat(rng.uniform(1.0, 2.0, (k, 1)), chunks, axis=1)
    fwd[:, 0] += 0.3
    fwd[:, -1] += rng.uniform(0.5, 1.0, k)
    bwd = 2.0 * fwd
    p2p = np.repeat(rng.uniform(0.0, 0.1, (k, 1)), chunks - 1, axis=1)
    p2p[::3] = 0.0
    w = 0.5 * bwd if schedule == "zb_h1" else None
    got = sim_batch.simulate_batch(schedule, pp, m, v, fwd, bwd, p2p, w)
    assert sum(skipped_rows) == k  # every row left through the skip
    for i in range(k):
        ref = simulate(fwd[i].tolist(), bwd[i].tolist(), schedule=schedule, num_microbatches=m, vpp=v,
                       p2p_ms=p2p[i].tolist(), w_ms=None if w is None else w[i].tolist())
        assert got.step_ms[i] == pytest.approx(ref.step_ms, rel=1e-12)
        assert got.end_ms[i].tolist() == pytest.approx(list(ref.end_ms), rel=1e-12)
        assert got.bubble_fraction[i] == pytest.approx(ref.bubble_fraction, rel=1e-9, abs=1e-12)


def test_deepspeeds_blocking_pipeline_repeats_and_skipping_it_agrees(skipped_rows):
    from pptune.cost.cache import CostCache
    from pptune.cost.compiled import compiled_schedule
    from pptune.cost.orders import RENDEZVOUS_1F1B

    for pp, m, period in ((2, 64, 6), (3, 64, 9), (4, 64, 9), (16, 128, 9)):
        compiled = compiled_schedule(CostCache(), RENDEZVOUS_1F1B, pp, m, 1)
        steady = steady_state(compiled)
        assert steady is not None and steady.period == period
    rng = np.random.default_rng(9)
    k, pp, m = 12, 8, 96
    fwd = np.repeat(rng.uniform(1.0, 2.0, (k, 1)), pp, axis=1)
    fwd[:, -1] += rng.uniform(0.5, 1.0, k)
    bwd = 2.0 * fwd
    transfer = np.repeat(rng.uniform(0.0, 0.1, (k, 1)), pp - 1, axis=1)
    got = sim_batch.simulate_batch(RENDEZVOUS_1F1B, pp, m, 1, fwd, bwd, transfer)
    assert sum(skipped_rows) == k
    for i in range(k):
        ref = simulate(fwd[i].tolist(), bwd[i].tolist(), schedule=RENDEZVOUS_1F1B, num_microbatches=m,
                       p2p_ms=transfer[i].tolist())
        assert got.step_ms[i] == pytest.approx(ref.step_ms, rel=1e-12)
        assert got.end_ms[i].tolist() == pytest.approx(list(ref.end_ms), rel=1e-12)
