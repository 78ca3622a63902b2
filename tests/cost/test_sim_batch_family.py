"""Shapes that differ only in their micro-batch count run as one family on the shortest one's levels and agree with
the event loop, whether their rows settle there (offset fill) or are sent back to their own shape."""

from __future__ import annotations

import numpy as np
import pytest

from pptune.cost import sim_batch, steady
from pptune.cost.compiled import compile_schedule
from pptune.cost.schedule import simulate


def _rows(rng, k: int, chunks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fwd = np.repeat(rng.uniform(1.0, 2.0, (k, 1)), chunks, axis=1)
    fwd[:, 0] *= 0.5  # a light first stage (embedding only), a heavier last one (head)
    fwd[:, -1] += rng.uniform(0.0, 0.5, k)
    fwd[1::2] += rng.uniform(0.0, 0.05, (len(fwd[1::2]), chunks))  # some rows with uneven stages
    p2p = np.repeat(rng.uniform(0.0, 0.6, (k, 1)), chunks - 1, axis=1)
    return fwd, 2.0 * fwd, p2p


CASES = [("1f1b", 16, (48, 96, 192), 1), ("1f1b", 24, (96, 192), 1), ("interleaved_1f1b", 4, (24, 48), 3),
         ("zb_h1", 8, (48, 96), 1)]


def _item(schedule, pp, m, vpp, rows):
    """simulate_batches' item (the weight-gradient share: half the backward, zb_h1 only)."""
    fwd, bwd, p2p = rows
    return (schedule, pp, m, vpp, fwd, bwd, p2p, 0.5 * bwd if schedule == "zb_h1" else None)


def _reference(schedule, m, vpp, fwd, bwd, p2p, w, i):
    return simulate(fwd[i].tolist(), bwd[i].tolist(), schedule=schedule, num_microbatches=m, vpp=vpp,
                    p2p_ms=p2p[i].tolist(), w_ms=None if w is None else w[i].tolist())


@pytest.mark.parametrize(("schedule", "pp", "ms", "vpp"), CASES)
@pytest.mark.parametrize("force_back", [False, True])
def test_a_family_agrees_with_the_event_loop(schedule, pp, ms, vpp, force_back, monkeypatch):
    rng = np.random.default_rng(pp + vpp)
    base, longest = compile_schedule(schedule, pp, ms[0], vpp), compile_schedule(schedule, pp, ms[-1], vpp)
    assert steady.long_enough(base) and steady.family_offset(base, longest) is not None
    k = 6
    items = [_item(schedule, pp, m, vpp, _rows(rng, k, pp * vpp)) for m in ms]
    filled, real_skip = [], sim_batch._skip

    def spy(steady, starts, end, level, stages, offsets=None, alive=None):
        done = real_skip(steady, starts, end, level, stages, offsets, alive)
        if offsets is not None:
            if force_back:  # longer shapes' rows never settle on the base: all go back to their own shape
                done &= offsets == 0
            filled.append(int((done & (offsets > 0)).sum()))
        return done

    monkeypatch.setattr(sim_batch, "_skip", spy)
    monkeypatch.setattr(sim_batch, "_LOOP_OPS_PER_LEVEL", 0)
    results = sim_batch.simulate_batches(items)
    assert (sum(filled) == 0) == force_back  # the offset fill ran (or was forced off)
    for (_, _, m, _, fwd, bwd, p2p, w), got in zip(items, results, strict=True):
        for i in range(k):
            ref = _reference(schedule, m, vpp, fwd, bwd, p2p, w, i)
            assert got.step_ms[i] == pytest.approx(ref.step_ms, rel=1e-12), (m, i)
            assert got.end_ms[i].tolist() == pytest.approx(list(ref.end_ms), rel=1e-12), (m, i)


def test_shapes_of_another_schedule_or_depth_are_not_family():
    base = compile_schedule("1f1b", 16, 48)
    assert steady.family_offset(base, compile_schedule("1f1b", 16, 96)) is not None
    assert steady.family_offset(base, compile_schedule("gpipe", 16, 96)) is None
    assert steady.family_offset(base, compile_schedule("1f1b", 8, 96)) is None
    assert steady.family_offset(compile_schedule("1f1b", 16, 96), base) is None  # shorter than the base


def test_no_simulated_end_is_read_before_it_is_written(monkeypatch):
    """The batched simulator allocates its end arrays uninitialised: filled with NaN (which max() propagates),
    every result must still equal the event loop's, through families, skips, compaction and the union."""
    monkeypatch.setattr(sim_batch, "_uninitialised", lambda shape: np.full(shape, np.nan))
    monkeypatch.setattr(sim_batch, "_LOOP_OPS_PER_LEVEL", 0)
    rng = np.random.default_rng(7)
    items = [_item(schedule, pp, m, vpp, _rows(rng, 6, pp * vpp)) for schedule, pp, ms, vpp in CASES for m in ms]
    items += [_item("1f1b", 8, 4, 1, _rows(rng, 5, 8)), _item("interleaved_1f1b", 2, 4, 2, _rows(rng, 3, 4))]
    for (schedule, _, m, vpp, fwd, bwd, p2p, w), got in zip(items, sim_batch.simulate_batches(items), strict=True):
        assert not np.isnan(got.end_ms).any()
        for i in range(len(fwd)):
            ref = _reference(schedule, m, vpp, fwd, bwd, p2p, w, i)
            assert got.step_ms[i] == pytest.approx(ref.step_ms, rel=1e-12)
