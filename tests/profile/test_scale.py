"""A calibrated compute scale: scaled profiles, and profile_for applying a cluster's scale to measured profiles only."""

from __future__ import annotations

from pathlib import Path

import pytest

from pptune.errors import ConfigError
from pptune.hardware import load_cluster
from pptune.profile.scale import compute_scale_of, scaled_profile
from pptune.profile.schema import save_profile
from pptune.profile.source import profile_for
from pptune.testing.profiles import small_profile


def test_scaled_profile_multiplies_times_only() -> None:
    p = small_profile()
    q = scaled_profile(p, 1.5)
    a, b = p.layers[2].timings[1], q.layers[2].timings[1]
    assert (b.fwd_ms, b.bwd_ms) == (1.5 * a.fwd_ms, 1.5 * a.bwd_ms)
    assert (b.saved_bytes, b.output_bytes, b.fwd_flops) == (a.saved_bytes, a.output_bytes, a.fwd_flops)
    assert scaled_profile(p, 1.0) is p


def test_compute_scale_must_be_positive() -> None:
    assert compute_scale_of({}) == 1.0 and compute_scale_of({"compute_scale": 1.2}) == 1.2
    for bad in (0, -1.0, "2", True):
        with pytest.raises(ConfigError, match="compute_scale"):
            compute_scale_of({"compute_scale": bad})


def test_profile_for_applies_a_calibrated_clusters_scale(tmp_path: Path) -> None:
    path = str(save_profile(small_profile(), tmp_path / "p.json"))
    plain = load_cluster("local-cpu")
    calibrated = plain.replace(calibration={"compute_scale": 1.25})
    base = profile_for(path, plain)
    got = profile_for(path, calibrated)
    assert got.layers[1].timings[0].fwd_ms == pytest.approx(1.25 * base.layers[1].timings[0].fwd_ms)
    assert profile_for(path, calibrated) is got  # cached: the cost model's caches keep hitting
    assert profile_for(path, plain.gpu) is base  # a bare GPU carries no calibration
    analytic = profile_for("gpt:layers=2,hidden=64,heads=2,seq=32,vocab=128", calibrated, dtype="fp32")
    assert analytic == profile_for("gpt:layers=2,hidden=64,heads=2,seq=32,vocab=128", plain, dtype="fp32")
