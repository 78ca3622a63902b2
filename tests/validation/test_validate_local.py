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
    # pp 2, dp 2, tp 2 (pptune's tensor-parallel layers) and the pp 2 x tp 2 correctness run on 4 processes
    assert [(r["pp"], r["tp"], r["dp"]) for r in rows] == [("2", "1", "1"), ("1", "1", "2"), ("1", "2", "1"),
                                                           ("2", "2", "1")]
    for r in rows:
        assert r["failure"] == "" and float(r["measured_ms"]) > 0 and float(r["predicted_ms"]) > 0
        assert 0 <= float(r["measured_idle"]) < 1
        assert float(r["pred_tp_comm_ms"]) > 0 if r["tp"] == "2" else float(r["pred_tp_comm_ms"]) == 0
    for name in ("predicted_vs_measured.png", "bubble_vs_microbatches.png", "profile.json", "summary.md"):
        assert (out / name).stat().st_size > 0
    for r in rows:  # each run left its plan directory and measurement
        tp = "tp2-" if r["tp"] == "2" else ""
        slug = f"{tp}pp{r['pp']}-dp{r['dp']}-mbs2-m{r['num_microbatches']}-" + ("uniform" if r["pp"] == "2" else "nopipe")
        assert (out / "runs" / slug / "measured.json").exists()
    print(text)  # shown with pytest -s: each row's predicted vs measured step time
    assert "uncalibrated: median |error|" in text and "Spearman" in text
    assert "pptune validate --local" in (out / "summary.md").read_text()


def test_tensor_parallel_rows_can_be_left_out() -> None:
    import argparse

    from pptune.commands.validate_local import add_local_options, settings_from
    from pptune.validation.local import grid_configs

    parser = argparse.ArgumentParser()
    add_local_options(parser)
    with_tp = settings_from(parser.parse_args([]))
    without = settings_from(parser.parse_args(["--no-tensor-parallel"]))
    assert with_tp.tensor_parallel and not without.tensor_parallel
    assert {c.tp for c in grid_configs(with_tp)} == {1, 2} and {c.tp for c in grid_configs(without)} == {1}
