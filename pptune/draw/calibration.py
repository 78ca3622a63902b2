"""The predicted-vs-measured chart of ``pptune validate`` (written through ``pptune.draw.save``).

Compute first (``pptune.calibrate.report.RowResult``), then draw: log-log axes, the ``y = x`` line, a
+-10% band, fitted and held-out rows in different markers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from pptune.calibrate.report import RowResult, error_stats
from pptune.draw.save import save_figure

BAND = 0.10


def draw_predicted_vs_measured(results: Sequence[RowResult], *, title: str) -> Figure:
    """Predicted against measured iteration time, one point per row."""
    fig = Figure(figsize=(7.2, 6.6), layout="constrained")
    ax = fig.subplots()
    measured = [r.row.measured_ms for r in results]
    predicted = [r.predicted_ms for r in results]
    lo = min(min(measured), min(predicted)) * 0.8
    hi = max(max(measured), max(predicted)) * 1.25
    xs = [lo, hi]
    ax.fill_between(xs, [x * (1 - BAND) for x in xs], [x * (1 + BAND) for x in xs], color="#DDDDDD",
                    label=f"within +-{BAND:.0%}")
    ax.plot(xs, xs, color="black", lw=1, label="predicted = measured")
    for held, marker, color in ((False, "o", "#4C72B0"), (True, "^", "#DD8452")):
        part = [r for r in results if r.held_out == held]
        if not part:
            continue
        stats = error_stats([r.error for r in part])
        ax.scatter([r.row.measured_ms for r in part], [r.predicted_ms for r in part], s=14, marker=marker,
                   color=color, alpha=0.6, edgecolor="none",
                   label=f"{'held-out' if held else 'fit'} (n={stats.n}): mean {stats.mean_pct:.1f}%, "
                         f"max {stats.max_pct:.0f}%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured iteration time (ms)")
    ax.set_ylabel("predicted iteration time (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def save_predicted_vs_measured(results: Sequence[RowResult], path: str | os.PathLike, *, title: str) -> Path:
    """Draw and write the chart (PNG, temporary file then rename)."""
    return save_figure(draw_predicted_vs_measured(results, title=title), path, fmt="png")
