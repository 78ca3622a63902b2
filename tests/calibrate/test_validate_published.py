"""Checks ``pptune validate --published``: report files, printed figures, and one-line errors."""

from __future__ import annotations

from pptune.cli import main
from pptune.testing.calibration import SAMPLE_ROWS, write_csv


def test_evaluates_committed_constants_and_writes_the_report(tmp_path, capsys) -> None:
    data = write_csv(tmp_path / "runs.csv", SAMPLE_ROWS)
    out = tmp_path / "report"
    assert main(["validate", "--published", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "random     fit" in printed and "random     held-out" in printed
    assert {p.name for p in out.iterdir()} == {"predictions_random.csv", "predicted_vs_measured_random.png",
                                              "summary.md"}
    summary = (out / "summary.md").read_text()
    assert "| random | held-out | 2 |" in summary and "matmul_efficiency" in summary and "runs.csv" in summary
    assert len((out / "predictions_random.csv").read_text().splitlines()) == 5


def test_fit_reports_both_splits(tmp_path, capsys) -> None:
    data = write_csv(tmp_path / "runs.csv", SAMPLE_ROWS * 3)
    out = tmp_path / "report"
    assert main(["validate", "--published", str(data), "--out", str(out), "--fit"]) == 0
    printed = capsys.readouterr().out
    assert "random constants:" in printed and "structural constants:" in printed
    assert (out / "constants.json").exists() and (out / "predictions_structural.csv").exists()


def test_bad_file_is_one_line_exit_2(tmp_path, capsys) -> None:
    assert main(["validate", "--published", str(tmp_path / "nope.csv"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pptune validate: error:") and "cannot read" in err and "\n" not in err
