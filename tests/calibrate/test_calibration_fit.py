"""Checks the fit/held-out splits and that the least-squares fit recovers constants that generated the data."""

from __future__ import annotations

import builtins
import dataclasses

import pytest

from pptune.calibrate.constants import BOUNDS, FITTED, Constants
from pptune.calibrate.fit import fit_constants, held_out
from pptune.calibrate.predict import predict_rows
from pptune.calibrate.published import PublishedRow, load_published
from pptune.errors import PptuneError
from pptune.hardware import load_cluster
from pptune.testing.data import PUBLISHED_SINGLE_NODE as DATA

BASE = load_cluster("a100-80g")


def _grid() -> list[PublishedRow]:
    """A small grid spanning the host-bound floor, GEMM sizes, TP and pipeline depth."""
    rows = []
    for h, tp, pp, mbs, layers in [(1024, 1, 1, 1, 12), (1024, 2, 1, 1, 12), (2048, 1, 2, 4, 16), (2048, 4, 1, 8, 24),
                                   (1024, 8, 1, 2, 12), (2048, 2, 4, 2, 24), (1024, 1, 4, 8, 20), (2048, 8, 1, 1, 16)]:
        dp = 8 // (tp * pp)
        for m in (2, 8):
            rows.append(PublishedRow(index=len(rows), gpus=8, global_batch=m * mbs * dp, micro_batch=mbs, hidden=h,
                                     heads=16, layers=layers, seq_len=1024, tp=tp, dp=dp, pp=pp, measured_ms=1.0))
    return rows


def test_fit_recovers_the_constants_that_made_the_data() -> None:
    truth = Constants(matmul_half_flops=3e9, memory_efficiency=0.75, launch_overhead_us=30.0, nvlink_latency_us=8.0,
                      per_microbatch_overhead_ms=2.0)
    rows = _grid()
    made = [dataclasses.replace(r, measured_ms=ms) for r, ms in zip(rows, predict_rows(rows, BASE, truth), strict=True)]
    result = fit_constants(made, BASE)
    assert result.rms_relative_error < 1e-3
    for name in ("memory_efficiency", "launch_overhead_us", "per_microbatch_overhead_ms"):
        assert getattr(result.constants, name) == pytest.approx(getattr(truth, name), rel=0.05), name
    assert result.constants.matmul_efficiency == truth.matmul_efficiency  # held fixed


def test_fitted_constants_stay_inside_their_bounds() -> None:
    rows = [dataclasses.replace(r, measured_ms=r.measured_ms * 1e-3) for r in _grid()]  # absurdly fast "runs"
    result = fit_constants(rows, BASE, max_evaluations=30)
    for name in FITTED:
        lo, hi = BOUNDS[name]
        assert lo <= getattr(result.constants, name) <= hi


def test_fit_without_scipy_is_a_one_line_error(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    with pytest.raises(PptuneError, match="needs scipy"):
        fit_constants(_grid(), BASE)
    with pytest.raises(PptuneError, match="no rows"):
        fit_constants([], BASE)


def test_splits() -> None:
    rows = _grid()
    random_held = held_out(rows, "random")
    assert sum(random_held) == len(rows) // 2 and held_out(rows, "random") == random_held  # seeded
    structural = held_out(rows, "structural")
    assert structural == [r.pp == 4 or (r.hidden == 2048 and r.layers == 24) for r in rows] and any(structural)
    with pytest.raises(PptuneError, match="unknown split"):
        held_out(rows, "alphabetical")


def test_structural_split_of_the_published_file() -> None:
    held = held_out(load_published(DATA), "structural")
    assert sum(held) == 390  # 240 four-stage rows + 150 other rows of the h 2048, 24-layer model
