"""The series of ``pptune validate --local``'s figures: predicted vs measured step time, idle share vs micro-batches.

Pure (tested): ``scatter_series`` groups measured runs by layout family, ``bubble_series`` orders each pipeline
family by micro-batches and adds the closed form. ``pptune.draw.validation`` draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    tp = f"tp{c.tp} " if c.tp > 1 else ""
    return tp + (f"pp{c.pp} {c.partition}" if c.pp > 1 else f"pp{c.pp} dp{c.dp}")


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
