"""``pptune calibrate``: fits measured plan directories into a loadable cluster JSON, reports held-out errors, fails in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pptune.calibrate.local_fit import LocalConstants, Sample, calibrated_cluster, predict_ms
from pptune.cli import main
from pptune.hardware import load_cluster
from pptune.testing.calibration import measured_dir
from pptune.testing.profiles import small_profile
from pptune.validation.grid import local_grid


def test_calibrate_writes_cluster_and_reports_leave_one_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = load_cluster("local-cpu")
    truth = calibrated_cluster(base, LocalConstants(compute_scale=1.1, per_microbatch_overhead_ms=1.5,
                                                    per_step_overhead_ms=20.0))
    profile = small_profile()
    dirs = []
    for i, config in enumerate(local_grid(global_batch_size=8)[:5]):
        ms = predict_ms(Sample(label="", profile=profile, config=config, measured_ms=1.0), truth)
        dirs.append(str(measured_dir(tmp_path, config, ms, name=f"run{i}")))
    out = tmp_path / "cal.json"
    assert main(["calibrate", *dirs, "--cluster", "local-cpu", "-o", str(out), "--no-links"]) == 0
    text = capsys.readouterr().out
    assert "leave-one-out" in text and "held-out" in text
    cluster = load_cluster(out)
    assert cluster.per_microbatch_overhead_ms == pytest.approx(1.5, rel=0.02)
    assert cluster.per_step_overhead_ms == pytest.approx(20.0, rel=0.02)
    fit = cluster.calibration["local_fit"]
    assert cluster.calibration["compute_scale"] == pytest.approx(1.1, rel=1e-3)
    assert len(fit["errors_leave_one_out"]) == 5 and max(abs(e) for e in fit["errors_leave_one_out"]) < 0.01
    assert "pptune calibrate" in fit["command"]


def test_calibrate_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["calibrate", str(tmp_path / "nope"), "--cluster", "local-cpu", "-o", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "plan.json: missing" in err
