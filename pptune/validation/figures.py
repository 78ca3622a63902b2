"""Validation figures: predicted vs measured step time, and idle share vs micro-batches (predicted and measured).

Compute, then draw: ``scatter_series`` and ``bubble_series`` are pure (tested); ``draw_*`` only draw them with
matplotlib's Agg backend (imported inside, so importing this module stays light) and write the file atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pptune.validation.record import RunRecord


@dataclass(frozen=True, kw_only=True, slots=True)
class ScatterGroup:
    """Points of one layout/partition family in the predicted-vs-measured scatter."""

    name: str  # e.g. "pp2 uniform", "pp1 dp2"
    labels: tuple[str, ...]
    measured_ms: tuple[float, ...]
    predicted_ms: tuple[float, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class BubbleCurve:
    """Idle share against micro-batches per step for one pipeline layout/partition family."""

    name: str
    num_microbatches: tuple[int, ...]
    predicted_idle: tuple[float, ...]
    measured_idle: tuple[float | None, ...]
    closed_form: tuple[float, ...]  # (p-1)/(m+p-1): uniform stages, no communication or overhead


def family(record: RunRecord) -> str:
    c = record.config
    return f"pp{c.pp} {c.partition}" if c.pp > 1 else f"pp{c.pp} dp{c.dp}"


def scatter_series(records: Sequence[RunRecord], predicted_ms: Sequence[float] | None = None) -> tuple[ScatterGroup, ...]:
    """Measured runs grouped by family; ``predicted_ms`` replaces the records' own predictions (e.g. calibrated ones)."""
    preds = list(predicted_ms) if predicted_ms is not None else [r.predicted_ms for r in records]
    groups: dict[str, list[tuple[str, float, float]]] = {}
    for record, pred in zip(records, preds, strict=True):
        if record.measured_ms is not None:
            groups.setdefault(family(record), []).append((record.label, record.measured_ms, pred))
    return tuple(
        ScatterGroup(name=name, labels=tuple(p[0] for p in pts), measured_ms=tuple(p[1] for p in pts),
                     predicted_ms=tuple(p[2] for p in pts))
        for name, pts in groups.items()
    )


def bubble_series(records: Sequence[RunRecord]) -> tuple[BubbleCurve, ...]:
    """One curve per pipeline family (pp > 1), points sorted by micro-batches per step."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        if record.config.pp > 1:
            groups.setdefault(family(record), []).append(record)
    curves = []
    for name, members in groups.items():
        members.sort(key=lambda r: r.config.num_microbatches)
        p = members[0].config.pp
        curves.append(BubbleCurve(
            name=name, num_microbatches=tuple(r.config.num_microbatches for r in members),
            predicted_idle=tuple(r.predicted_idle for r in members),
            measured_idle=tuple(r.measured_idle for r in members),
            closed_form=tuple((p - 1) / (r.config.num_microbatches + p - 1) for r in members),
        ))
    return tuple(curves)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


MARKERS = ("o", "s", "^", "D", "v", "P")


def draw_scatter(groups: Sequence[ScatterGroup], path: str | os.PathLike, *, title: str, note: str = "",
                 band: float = 0.05) -> Path:
    """Predicted (y) against measured (x) step time, the y = x line and a +-``band`` band."""
    fig = _figure(6.2, 5.6)
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
    return _save(fig, path)


def draw_bubble(curves: Sequence[BubbleCurve], path: str | os.PathLike, *, title: str, note: str = "") -> Path:
    """Idle share of the step against micro-batches per step: predicted (solid), measured (dashed), closed form (dotted)."""
    fig = _figure(6.8, 4.6)
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
    return _save(fig, path)
