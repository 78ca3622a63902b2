"""k-shot series: one curve per set in k order, sets too small for a k skip it; the figure is written whole."""

from __future__ import annotations

from pathlib import Path

from pptune.calibrate.kshot import KShotResult, Scores
from pptune.charts.kshot import kshot_series


def result(source: str, k: int, mean: float | None) -> KShotResult:
    scores = None if mean is None else Scores(count=5, mean_abs=mean, median_abs=mean, max_abs=2 * mean,
                                              signed_mean=-mean, spearman=0.9)
    return KShotResult(source=source, k=k, draws=3, scores=scores, fitted=())


def test_series_sort_by_k_and_skip_missing_points(tmp_path: Path) -> None:
    rows = [result("A", 3, 0.04), result("A", 0, 0.1), result("B", 0, 0.2), result("B", 5, None), result("A", 1, 0.06)]
    curves = kshot_series(rows)
    assert [c.name for c in curves] == ["A", "B"]
    assert curves[0].ks == (0, 1, 3) and curves[0].mean_abs_error == (0.1, 0.06, 0.04)
    assert curves[0].signed_mean_error == (-0.1, -0.06, -0.04)
    assert curves[1].ks == (0,)
    from pptune.draw.kshot import draw_kshot

    path = draw_kshot(curves, tmp_path / "k.png", title="t", target=0.04)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*tmp"))
