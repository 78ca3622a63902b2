"""Checks the committed A100 constants against the published data and the documented H100/H200 derivation."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from pptune.calibrate.constants import A100_MAMF_EFFICIENCY, BOUNDS, FITTED, H100_MAMF_EFFICIENCY, Constants
from pptune.calibrate.fit import fit_constants, held_out
from pptune.calibrate.predict import predict_rows, relative_errors
from pptune.calibrate.published import load_published
from pptune.hardware import CLUSTER_PRESETS
from pptune.testing.data import PUBLISHED_SINGLE_NODE as DATA

# What `pptune validate --published tests/data/a100_megatron_single_node.csv --fit` committed (the file was then
# read from shared/data/, the same bytes).
COMMITTED = Path(__file__).resolve().parents[2] / "results" / "validation" / "published" / "constants.json"


def test_a100_presets_carry_fitted_plausible_constants_with_provenance() -> None:
    for key in ("a100-80g", "a100-40g"):
        preset = CLUSTER_PRESETS[key]
        c = Constants.of(preset)
        assert c.matmul_efficiency == pytest.approx(A100_MAMF_EFFICIENCY, rel=1e-3)
        for name in FITTED:
            lo, hi = BOUNDS[name]
            assert lo < getattr(c, name) < hi, name
        assert preset.calibration["split"].startswith("random") and "fitted" in preset.calibration
        assert preset.gpu.memory_efficiency <= 1.0


def test_a100_presets_are_the_committed_fit_rounded() -> None:
    fitted = json.loads(COMMITTED.read_text(encoding="utf-8"))["random"]
    for key in ("a100-80g", "a100-40g"):
        c = Constants.of(CLUSTER_PRESETS[key])
        for name in FITTED:  # four significant digits
            assert getattr(c, name) == pytest.approx(fitted[name], rel=6e-4), (key, name)


def test_the_fit_still_gives_the_committed_constants() -> None:
    """The committed report is what its command gives with today's cost model (a model change must refit it)."""
    rows = load_published(DATA)
    held = held_out(rows, "random")
    result = fit_constants([r for r, h in zip(rows, held, strict=True) if not h], CLUSTER_PRESETS["a100-80g"])
    fitted = json.loads(COMMITTED.read_text(encoding="utf-8"))["random"]
    for name in FITTED:
        assert getattr(result.constants, name) == pytest.approx(fitted[name], rel=1e-4), name  # drift seen: 5e-4-7e-3


def test_h100_and_h200_follow_the_documented_ratios() -> None:
    a100 = CLUSTER_PRESETS["a100-80g"]
    for key in ("h100-80g", "h200"):
        h = CLUSTER_PRESETS[key]
        assert h.gpu.matmul_efficiency == pytest.approx(H100_MAMF_EFFICIENCY, rel=1e-3)
        assert h.gpu.matmul_half_flops == pytest.approx(a100.gpu.matmul_half_flops * 989 / 312, rel=1e-3)
        assert h.gpu.memory_efficiency == a100.gpu.memory_efficiency
        assert h.gpu.launch_overhead_us == a100.gpu.launch_overhead_us  # host-side: unchanged
        assert h.per_microbatch_overhead_ms == a100.per_microbatch_overhead_ms
        assert "derivation" in h.calibration


def test_committed_constants_predict_the_published_single_node_runs() -> None:
    rows = load_published(DATA)
    preset = CLUSTER_PRESETS["a100-80g"]
    errors = [abs(e) for e in relative_errors(predict_rows(rows, preset, Constants.of(preset)), rows)]
    held = held_out(rows, "random")
    held_errors = [e for e, h in zip(errors, held, strict=True) if h]
    # results/validation/published/summary.md: 6.4% mean / 29% max on the held-out half.
    assert statistics.fmean(held_errors) < 0.07 and max(held_errors) < 0.32
    assert statistics.median(errors) < 0.055
