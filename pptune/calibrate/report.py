"""Predicted vs measured: per-row results, error statistics, the CSV and the markdown summary.

Errors are relative, ``predicted / measured - 1``; the statistics are over their absolute values in percent.
"""

from __future__ import annotations

import csv
import io
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pptune.calibrate.constants import FITTED, Constants
from pptune.calibrate.published import PublishedRow
from pptune.fileio import write_text_atomic

# Published planners' errors against real runs (docs/REFERENCE.md §6), for the summary's comparison line.
ANCHORS = ("Calculon: 3.65% mean / 8.87% max against Megatron's published A100 runs; "
           "vTrain: 8.37% mean on this single-node data")


@dataclass(frozen=True, kw_only=True, slots=True)
class RowResult:
    """One row's prediction and which part of a split it belongs to."""

    row: PublishedRow
    predicted_ms: float
    held_out: bool

    @property
    def error(self) -> float:
        return self.predicted_ms / self.row.measured_ms - 1.0


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorStats:
    """Absolute relative errors of a set of rows, in percent."""

    n: int
    mean_pct: float
    median_pct: float
    max_pct: float

    def line(self) -> str:
        return f"{self.mean_pct:.2f}% mean, {self.median_pct:.2f}% median, {self.max_pct:.1f}% max (n={self.n})"


def error_stats(errors: Sequence[float]) -> ErrorStats:
    """Mean, median and max of ``|error|`` in percent (zeros for an empty set)."""
    if not errors:
        return ErrorStats(n=0, mean_pct=0.0, median_pct=0.0, max_pct=0.0)
    pct = [abs(e) * 100 for e in errors]
    return ErrorStats(n=len(pct), mean_pct=statistics.fmean(pct), median_pct=statistics.median(pct), max_pct=max(pct))


def part_stats(results: Sequence[RowResult]) -> dict[str, ErrorStats]:
    """Statistics of the fitted part, the held-out part and all rows."""
    return {
        "fit": error_stats([r.error for r in results if not r.held_out]),
        "held-out": error_stats([r.error for r in results if r.held_out]),
        "all": error_stats([r.error for r in results]),
    }


CSV_FIELDS = ("row", "gpus", "global_batch", "micro_batch", "hidden", "heads", "layers", "seq_len", "tp", "dp", "pp",
              "measured_ms", "predicted_ms", "error_pct", "part")


def rows_csv(results: Sequence[RowResult]) -> str:
    """One CSV line per row: its columns, measured and predicted time, the signed error and fit/held-out."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in results:
        w = r.row
        writer.writerow([w.index, w.gpus, w.global_batch, w.micro_batch, w.hidden, w.heads, w.layers, w.seq_len, w.tp,
                         w.dp, w.pp, f"{w.measured_ms:.3f}", f"{r.predicted_ms:.3f}", f"{r.error * 100:+.2f}",
                         "held-out" if r.held_out else "fit"])
    return out.getvalue()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` through a temporary file in the same folder, then rename (no half-written reports)."""
    return write_text_atomic(path, text)


def constants_table(named: dict[str, Constants]) -> str:
    """A markdown table of constant sets side by side (fixed plateau first, then the fitted ones)."""
    names = list(named)
    lines = ["| constant | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in ("matmul_efficiency", *FITTED):
        tag = "" if key in FITTED else " (fixed)"
        lines.append(f"| `{key}`{tag} | " + " | ".join(_fmt(getattr(named[n], key)) for n in names) + " |")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def errors_table(splits: dict[str, dict[str, ErrorStats]]) -> str:
    """A markdown table: one line per split and part."""
    lines = ["| split | part | rows | mean abs error | median | max |", "|---|---|---|---|---|---|"]
    for split, parts in splits.items():
        for part, s in parts.items():
            lines.append(f"| {split} | {part} | {s.n} | {s.mean_pct:.2f}% | {s.median_pct:.2f}% | {s.max_pct:.1f}% |")
    return "\n".join(lines)


def worst_rows(results: Sequence[RowResult], k: int = 8) -> str:
    """The ``k`` rows with the largest absolute error, as markdown bullet points."""
    worst = sorted(results, key=lambda r: -abs(r.error))[:k]
    return "\n".join(f"- {r.row.label()}: measured {r.row.measured_ms:.1f} ms, predicted {r.predicted_ms:.1f} ms "
                     f"({r.error * 100:+.1f}%, {'held-out' if r.held_out else 'fit'})" for r in worst)
