"""The series of the k-shot report's figure: held-out mean |error| (and signed mean) against k, one line per set.

Pure (tested): ``kshot_series`` turns ``pptune.calibrate.kshot.KShotResult`` rows into one curve per set, leaving
out the k a set is too small for. ``pptune.draw.kshot`` draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pptune.calibrate.kshot import KShotResult


@dataclass(frozen=True, kw_only=True, slots=True)
class KShotCurve:
    """One set: the k it could be calibrated with and the held-out errors at each (fractions)."""

    name: str
    ks: tuple[int, ...]
    mean_abs_error: tuple[float, ...]
    signed_mean_error: tuple[float, ...]


def kshot_series(results: Sequence[KShotResult]) -> tuple[KShotCurve, ...]:
    """One curve per source, in first-seen order, with its points sorted by k (sets too small for a k skip it)."""
    by_source: dict[str, list[KShotResult]] = {}
    for r in results:
        if r.scores is not None:
            by_source.setdefault(r.source, []).append(r)
    curves = []
    for name, rows in by_source.items():
        rows = sorted(rows, key=lambda r: r.k)
        curves.append(KShotCurve(name=name, ks=tuple(r.k for r in rows),
                                 mean_abs_error=tuple(r.scores.mean_abs for r in rows),  # type: ignore[union-attr]
                                 signed_mean_error=tuple(r.scores.signed_mean for r in rows)))  # type: ignore[union-attr]
    return tuple(curves)
