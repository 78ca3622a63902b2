"""simulate_batches runs shapes without a steady state in one shared level loop: every row's figures are exactly
what simulate_batch gives for its shape alone (and so what the event loop gives)."""

from __future__ import annotations

import numpy as np

from pptune.cost import sim_batch


def test_shared_level_loop_equals_each_shape_alone(monkeypatch):
    monkeypatch.setattr(sim_batch, "_LOOP_OPS_PER_LEVEL", 0)  # the level runner for every shape
    rng = np.random.default_rng(3)
    shapes = [("1f1b", 4, 8, 1, 9), ("1f1b", 8, 6, 1, 5), ("interleaved_1f1b", 4, 8, 2, 12), ("zb_h1", 3, 7, 1, 4),
              ("gpipe", 5, 4, 1, 2), ("interleaved_1f1b", 3, 6, 3, 7)]  # rows: buckets of several widths
    items = []
    for schedule, pp, m, vpp, k in shapes:
        chunks = pp * vpp
        fwd, bwd = rng.uniform(0.5, 2.0, (k, chunks)), rng.uniform(1.0, 4.0, (k, chunks))
        p2p = np.where(rng.random((k, chunks - 1)) < 0.5, rng.uniform(0.0, 0.3, (k, chunks - 1)), 0.0)
        items.append((schedule, pp, m, vpp, fwd, bwd, p2p, 0.4 * bwd if schedule == "zb_h1" else None))
    shared = []
    real = sim_batch._union_ends

    def counting(parts, width, cache):
        shared.append(len(parts))
        return real(parts, width, cache)

    monkeypatch.setattr(sim_batch, "_union_ends", counting)
    together = sim_batch.simulate_batches(items)
    assert max(shared) > 1  # some shapes did share a loop
    for item, got in zip(items, together, strict=True):
        alone = sim_batch.simulate_batch(*item)
        for name in ("step_ms", "busy_ms", "end_ms", "bubble_fraction"):
            assert np.array_equal(getattr(got, name), getattr(alone, name)), (item[:4], name)
        assert got.peak_inflight == alone.peak_inflight
