"""pptune validate --local end to end on a tiny grid: profile, predict, two real 2-rank DeepSpeed runs, report files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pptune.cli import main
from pptune.testing.profiles import TINY


@pytest.mark.slow
def test_validate_local_tiny_grid(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report"
    code = main(["validate", "--local", "--out", str(out), "--model", TINY, "--global-batch-size", "4",
                 "--micro-batch-sizes", "2", "--partitions", "uniform", "--steps", "2", "--warmup", "1",
                 "--cluster", "local-cpu", "--profile-repeat", "3", "--profile-copies", "1",
                 "--retries", "0", "--quiet-wait", "0"])
    text = capsys.readouterr().out
    assert code == 0, text
    rows = list(csv.DictReader((out / "validation.csv").open()))
    assert [(r["pp"], r["dp"]) for r in rows] == [("2", "1"), ("1", "2")]
    for r in rows:
        assert r["failure"] == "" and float(r["measured_ms"]) > 0 and float(r["predicted_ms"]) > 0
        assert 0 <= float(r["measured_idle"]) < 1
    for name in ("predicted_vs_measured.png", "bubble_vs_microbatches.png", "profile.json", "summary.md"):
        assert (out / name).stat().st_size > 0
    for r in rows:  # each run left its plan directory and measurement
        slug = f"pp{r['pp']}-dp{r['dp']}-mbs2-m{r['num_microbatches']}-" + ("uniform" if r["pp"] == "2" else "nopipe")
        assert (out / "runs" / slug / "measured.json").exists()
    assert "uncalibrated: median |error|" in text and "Spearman" in text
    assert "pptune validate --local" in (out / "summary.md").read_text()
