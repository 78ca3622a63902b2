"""The figures of ``pptune validate --local``: predicted vs measured step time, idle share vs micro-batches.

Compute, then draw: the series come from ``pptune.charts.validation`` (pure, tested); ``draw_*`` only draw
them and write the PNG through ``pptune.draw.save``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from pptune.charts.validation import BubbleCurve, ScatterGroup
from pptune.draw.save import save_figure

MARKERS = ("o", "s", "^", "D", "v", "P")


def draw_scatter(groups: Sequence[ScatterGroup], path: str | os.PathLike, *, title: str, note: str = "",
                 band: float = 0.05) -> Path:
    """Predicted (y) against measured (x) step time, the y = x line and a +-``band`` band."""
    fig = Figure(figsize=(6.2, 5.6))
    ax = fig.add_subplot()
    values = [v for g in groups for v in (*g.measured_ms, *g.predicted_ms)]
    lo, hi = (min(values) * 0.9, max(values) * 1.1) if values else (1.0, 10.0)
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="predicted = measured")
    ax.fill_between([lo, hi], [lo * (1 - band), hi * (1 - band)], [lo * (1 + band), hi * (1 + band)],
                    color="grey", alpha=0.2, label=f"±{band:.0%}")
    for i, g in enumerate(groups):
        ax.scatter(g.measured_ms, g.predicted_ms, marker=MARKERS[i % len(MARKERS)], s=45, label=g.name, zorder=3)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured step time (ms, median)")
    ax.set_ylabel("predicted step time (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    if note:
        fig.text(0.01, -0.02, note, fontsize=6.5, ha="left", va="top", wrap=True)
    return save_figure(fig, path, dpi=120, tight=True)


def draw_bubble(curves: Sequence[BubbleCurve], path: str | os.PathLike, *, title: str, note: str = "") -> Path:
    """Idle share of the step against micro-batches per step: predicted (solid), measured (dashed), closed form (dotted)."""
    fig = Figure(figsize=(6.8, 4.6))
    ax = fig.add_subplot()
    for i, c in enumerate(curves):
        color = f"C{i}"
        ax.plot(c.num_microbatches, c.predicted_idle, "-", marker=MARKERS[i % len(MARKERS)], color=color,
                label=f"{c.name}: predicted")
        pts = [(m, v) for m, v in zip(c.num_microbatches, c.measured_idle, strict=True) if v is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", marker=MARKERS[i % len(MARKERS)], color=color,
                    mfc="white", label=f"{c.name}: measured")
    if curves:
        ax.plot(curves[0].num_microbatches, curves[0].closed_form, ":", color="black", label="(p-1)/(m+p-1)")
    ax.set_xscale("log", base=2)
    ticks = sorted({m for c in curves for m in c.num_microbatches})
    ax.set_xticks(ticks, [str(m) for m in ticks])
    ax.minorticks_off()
    ax.set_xlabel("micro-batches per step m (global batch fixed; micro-batch size = global / m)")
    ax.set_ylabel("idle share of the step: 1 - stage compute / (pp x step)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5)
    ax.grid(alpha=0.3)
    if note:
        fig.text(0.01, -0.02, note, fontsize=6.5, ha="left", va="top", wrap=True)
    return save_figure(fig, path, dpi=120, tight=True)
