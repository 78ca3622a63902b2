"""Batched simulation gives exactly what simulate() gives for every row, on both of its code paths."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pptune.cost import sim_batch
from pptune.cost.schedule import simulate
from pptune.parallel import SCHEDULES


def _rows(rng: random.Random, k: int, chunks: int, *, uniform_some: bool):
    fwd, bwd, p2p = [], [], []
    for i in range(k):
        if uniform_some and i % 3 == 0:  # uniform stages without p2p: the closed form
            f, b = rng.uniform(0.5, 2.0), rng.uniform(1.0, 4.0)
            fwd.append([f] * chunks)
            bwd.append([b] * chunks)
            p2p.append([0.0] * (chunks - 1))
            continue
        fwd.append([rng.uniform(0.5, 2.0) for _ in range(chunks)])
        bwd.append([rng.uniform(1.0, 4.0) for _ in range(chunks)])
        p2p.append([rng.choice((0.0, rng.uniform(0.0, 0.4))) for _ in range(chunks - 1)])
    return np.array(fwd), np.array(bwd), np.array(p2p).reshape(k, chunks - 1)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("loop", [True, False])
def test_batch_equals_simulate(schedule, loop, monkeypatch):
    # Force one path: the per-row event loop, or the numpy level runner.
    monkeypatch.setattr(sim_batch, "_LOOP_OPS_PER_LEVEL", 10**9 if loop else 0)
    rng = random.Random(hash((schedule, loop)) % 1000)
    for pp, m in ((1, 3), (2, 4), (3, 6), (4, 8), (5, 5)):
        v = 2 if schedule == "interleaved_1f1b" and pp > 1 else 1
        if schedule == "interleaved_1f1b" and m % pp:
            continue
        chunks = pp * v
        fwd, bwd, p2p = _rows(rng, 7, chunks, uniform_some=True)
        w = 0.5 * bwd if schedule == "zb_h1" else None
        got = sim_batch.simulate_batch(schedule, pp, m, v, fwd, bwd, p2p, w)
        for i in range(len(fwd)):
            ref = simulate(fwd[i].tolist(), bwd[i].tolist(), schedule=schedule, num_microbatches=m, vpp=v,
                           p2p_ms=p2p[i].tolist(), w_ms=None if w is None else w[i].tolist())
            assert got.step_ms[i] == ref.step_ms
            assert tuple(got.end_ms[i].tolist()) == ref.end_ms
            assert tuple(got.busy_ms[i].tolist()) == ref.busy_ms
            assert got.bubble_fraction[i] == ref.bubble_fraction
            assert got.peak_inflight == ref.peak_inflight
