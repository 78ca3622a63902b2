"""Validation figures: the series (grouping, order, closed form) are checked; drawing writes non-empty PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pptune.charts.validation import bubble_series, family, scatter_series
from pptune.draw.validation import draw_bubble, draw_scatter
from pptune.parallel import ParallelConfig
from pptune.testing.records import record


def _records(profile, cluster):
    out = []
    for m in (4, 1, 2):
        for part in ("uniform", "balanced"):
            cfg = ParallelConfig(pp=2, micro_batch_size=4 // m, num_microbatches=m, dtype="fp32", partition=part)
            out.append(record(profile, cluster, cfg, measured_ms=100.0 * m, measured_idle=0.1 * m))
    dp = ParallelConfig(pp=1, dp=2, micro_batch_size=2, num_microbatches=1, dtype="fp32", partition="uniform")
    out.append(record(profile, cluster, dp, measured_ms=None))
    return out


def test_scatter_groups_measured_runs_by_family(profile, cluster) -> None:
    records = _records(profile, cluster)
    groups = scatter_series(records)
    assert [g.name for g in groups] == ["pp2 uniform", "pp2 balanced"]  # the failed dp run has no point
    assert groups[0].measured_ms == (400.0, 100.0, 200.0)
    assert groups[0].predicted_ms == tuple(r.predicted_ms for r in records if family(r) == "pp2 uniform")
    replaced = scatter_series(records, [1.0] * len(records))
    assert replaced[1].predicted_ms == (1.0, 1.0, 1.0)


def test_bubble_curves_sorted_by_microbatches_with_closed_form(profile, cluster) -> None:
    curves = bubble_series(_records(profile, cluster))
    assert [c.name for c in curves] == ["pp2 uniform", "pp2 balanced"]
    c = curves[0]
    assert c.num_microbatches == (1, 2, 4)
    assert c.closed_form == pytest.approx((1 / 2, 1 / 3, 1 / 5))
    assert c.measured_idle == pytest.approx((0.1, 0.2, 0.4))
    assert all(0 < v < 1 for v in c.predicted_idle)
    # Fewer micro-batches leave a larger share idle (the bubble), in the prediction too.
    assert c.predicted_idle[0] > c.predicted_idle[-1]


def test_drawing_writes_pngs(tmp_path: Path, profile, cluster) -> None:
    records = _records(profile, cluster)
    a = draw_scatter(scatter_series(records), tmp_path / "s.png", title="t", note="made by: test")
    b = draw_bubble(bubble_series(records), tmp_path / "b.png", title="t")
    for path in (a, b):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
