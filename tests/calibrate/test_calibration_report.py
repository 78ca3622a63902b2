"""Checks error statistics, the per-row CSV, atomic writes and the predicted-vs-measured chart."""

from __future__ import annotations

import pytest

from pptune.calibrate.published import load_published
from pptune.calibrate.report import RowResult, error_stats, part_stats, rows_csv, write_text
from pptune.testing.calibration import SAMPLE_ROWS, write_csv


def _results(tmp_path) -> list[RowResult]:
    rows = load_published(write_csv(tmp_path / "a.csv", SAMPLE_ROWS))
    factors = (1.10, 0.95, 1.02, 0.70)
    return [RowResult(row=r, predicted_ms=r.measured_ms * f, held_out=i % 2 == 1)
            for i, (r, f) in enumerate(zip(rows, factors, strict=True))]


def test_error_statistics(tmp_path) -> None:
    s = error_stats([0.1, -0.05, 0.02, -0.3])
    assert (s.n, s.mean_pct, s.median_pct, s.max_pct) == (4, pytest.approx(11.75), pytest.approx(7.5), pytest.approx(30))
    parts = part_stats(_results(tmp_path))
    assert parts["fit"].mean_pct == pytest.approx(6.0) and parts["held-out"].max_pct == pytest.approx(30.0)
    assert parts["all"].n == 4 and error_stats([]).n == 0


def test_rows_csv(tmp_path) -> None:
    lines = rows_csv(_results(tmp_path)).splitlines()
    assert lines[0].startswith("row,gpus,global_batch") and lines[0].endswith("error_pct,part")
    assert lines[1].split(",")[-2:] == ["+10.00", "fit"] and lines[4].split(",")[-2:] == ["-30.00", "held-out"]


def test_write_text_is_atomic_and_makes_folders(tmp_path) -> None:
    path = write_text(tmp_path / "a" / "b.md", "hello\n")
    assert path.read_text() == "hello\n" and [p.name for p in path.parent.iterdir()] == ["b.md"]


def test_chart_is_drawn(tmp_path) -> None:
    from pptune.draw.calibration import draw_predicted_vs_measured, save_predicted_vs_measured

    results = _results(tmp_path)
    fig = draw_predicted_vs_measured(results, title="t")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("fit (n=2)") for label in labels) and any("held-out (n=2)" in x for x in labels)
    path = save_predicted_vs_measured(results, tmp_path / "c.png", title="t")
    assert path.read_bytes()[:4] == b"\x89PNG"
