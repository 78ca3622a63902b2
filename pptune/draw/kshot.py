"""The k-shot report's figure: held-out mean |error| (solid) and signed mean (dashed) against calibration runs k.

The series come from ``pptune.charts.kshot`` (pure, tested); this module only draws them and writes the PNG through
``pptune.draw.save`` (temporary file, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from pptune.charts.kshot import KShotCurve
from pptune.draw.save import save_figure

MARKERS = ("o", "s", "^", "D", "v", "P")


def draw_kshot(curves: Sequence[KShotCurve], path: str | os.PathLike, *, title: str, target: float | None = None,
               note: str = "") -> Path:
    """Held-out error (%) of each set against k; ``target``: a horizontal line at that mean |error| (fraction)."""
    fig = Figure(figsize=(6.8, 4.6))
    ax = fig.add_subplot()
    for i, c in enumerate(curves):
        color, marker = f"C{i}", MARKERS[i % len(MARKERS)]
        ax.plot(c.ks, [100 * e for e in c.mean_abs_error], "-", marker=marker, color=color, label=f"{c.name}: mean |error|")
        ax.plot(c.ks, [100 * e for e in c.signed_mean_error], "--", marker=marker, mfc="white", color=color,
                label=f"{c.name}: signed mean")
    if target is not None:
        ax.axhline(100 * target, color="black", lw=1, ls=":", label=f"target {target:.0%}")
    ax.axhline(0, color="grey", lw=0.8)
    ks = sorted({k for c in curves for k in c.ks})
    if ks:
        ax.set_xticks(ks)
    ax.set_xlabel("runs of the set used to calibrate (k)")
    ax.set_ylabel("error on the other runs of the set (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best", ncol=2)
    ax.grid(alpha=0.3)
    if note:
        fig.text(0.01, -0.02, note, fontsize=6.5, ha="left", va="top", wrap=True)
    return save_figure(fig, path, dpi=120, tight=True)
