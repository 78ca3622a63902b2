"""The validation report: validation.csv, the two figures and summary.md, all in the output directory.

CSV columns (one row per configuration): ``configuration, predicted_ms, measured_ms, error`` first (error =
(predicted - measured) / measured, uncalibrated), then ``calibrated_ms`` / ``calibrated_error`` (leave-one-out:
from a fit that did not see this run), the layout, the idle shares, the predicted breakdown (``pred_*``), the
critical stage's measured instruction timers per step (``meas_*``), the host load before the run and, for
a failed run, why.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import subprocess
from pathlib import Path

from pptune.charts.validation import bubble_series, scatter_series
from pptune.draw.validation import draw_bubble, draw_scatter
from pptune.validation.grid import correctness_only
from pptune.validation.local import RANKS, LocalValidation
from pptune.validation.metrics import Accuracy

CSV_FILE = "validation.csv"
SCATTER_FILE = "predicted_vs_measured.png"
CALIBRATED_SCATTER_FILE = "predicted_vs_measured_calibrated.png"
BUBBLE_FILE = "bubble_vs_microbatches.png"
SUMMARY_FILE = "summary.md"
FIRST_COLUMNS = ("configuration", "predicted_ms", "measured_ms", "error", "calibrated_ms", "calibrated_error")
# The targets of GitHub issue 6 for this machine; issue 15 asks the uncalibrated median to be within 10%.
TARGETS = {"median_abs_error": 0.05, "max_abs_error": 0.15, "spearman": 0.9, "pick_gap": 0.05}
UNCALIBRATED_MEDIAN_TARGET = 0.10


def csv_text(result: LocalValidation) -> str:
    rows = []
    calibrated = result.calibrated_ms or (None,) * len(result.records)
    for record, cal in zip(result.records, calibrated, strict=True):
        row = record.to_row()
        row["calibrated_ms"] = cal
        row["calibrated_error"] = None if cal is None or record.measured_ms is None else \
            (cal - record.measured_ms) / record.measured_ms
        rows.append(row)
    columns = list(FIRST_COLUMNS) + sorted({k for row in rows for k in row} - set(FIRST_COLUMNS),
                                           key=lambda k: (k.startswith(("pred_", "meas_")), k))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return buf.getvalue()


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def cpu_model() -> str:
    """``lscpu``'s model name and CPU count (``/proc/cpuinfo`` if lscpu is missing)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=True).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs (lscpu)"
    except (OSError, subprocess.SubprocessError):
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1%}"


def _check(ok: bool) -> str:
    return "met" if ok else "**missed**"


def accuracy_lines(acc: Accuracy, *, median_target: float = TARGETS["median_abs_error"]) -> list[str]:
    return [
        f"| median abs error | {_pct(acc.median_abs_error)} | <= {median_target:.0%} | "
        f"{_check(acc.median_abs_error <= median_target)} |",
        f"| max abs error | {_pct(acc.max_abs_error)} ({acc.max_error_label}) | <= {TARGETS['max_abs_error']:.0%} | "
        f"{_check(acc.max_abs_error <= TARGETS['max_abs_error'])} |",
        f"| mean abs error | {_pct(acc.mean_abs_error)} | | |",
        f"| Spearman (throughput) | {acc.spearman:.3f} | >= {TARGETS['spearman']} | "
        f"{_check(acc.spearman >= TARGETS['spearman'])} |",
        f"| model's pick vs measured best | {acc.model_pick} vs {acc.measured_best}: "
        f"{'the same' if acc.pick_is_best else f'pick {acc.pick_gap:.1%} slower'} | within {TARGETS['pick_gap']:.0%} | "
        f"{_check(acc.pick_gap <= TARGETS['pick_gap'])} |",
    ]


def print_lines(result: LocalValidation) -> list[str]:
    """What ``pptune validate --local`` prints at the end."""
    lines = []
    for name, acc in (("uncalibrated", result.before), ("uncalibrated at the profile's host speed", result.at_profile_speed),
                      ("calibrated (leave-one-out)", result.after)):
        if acc is None:
            continue
        lines.append(
            f"{name}: median |error| {_pct(acc.median_abs_error)}, max {_pct(acc.max_abs_error)} "
            f"({acc.max_error_label}), Spearman {acc.spearman:.3f}; model's pick {acc.model_pick}: "
            + ("the measured fastest" if acc.pick_is_best else f"{acc.pick_gap:.1%} slower than {acc.measured_best}"))
    failed = [r for r in result.records if not r.ok]
    if failed:
        lines.append(f"{len(failed)} of {len(result.records)} runs failed: " + "; ".join(f"{r.label}: {r.failure}" for r in failed))
    return lines


def write_figures(result: LocalValidation, out: Path, command: str | None) -> list[Path]:
    note = f"made by: {command}" if command else ""
    timed = [i for i, r in enumerate(result.records) if not correctness_only(r.config, ranks=RANKS)]
    records = tuple(result.records[i] for i in timed)  # correctness-only rows are not plotted against the model
    paths = [draw_scatter(scatter_series(records), out / SCATTER_FILE, note=note,
                          title=f"{result.settings.model}\nuncalibrated: profile + probed links, no fitted constant"),
             draw_bubble(bubble_series(records), out / BUBBLE_FILE, note=note,
                         title=f"{result.settings.model}, global batch {result.settings.global_batch_size}")]
    if result.calibrated_ms is not None:
        preds = [p if p is not None else r.predicted_ms
                 for p, r in zip([result.calibrated_ms[i] for i in timed], records, strict=True)]
        paths.append(draw_scatter(scatter_series(records, preds), out / CALIBRATED_SCATTER_FILE, note=note,
                                  title=f"{result.settings.model}\ncalibrated, leave-one-out (each point: fit without it)"))
    return paths


def write_report(result: LocalValidation, out_dir: str | os.PathLike, *, command: str | None,
                 summary_text: str) -> list[Path]:
    """Write validation.csv, the figures and summary.md (each replaced atomically); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [_write_text(out / CSV_FILE, csv_text(result))]
    paths += write_figures(result, out, command)
    paths.append(_write_text(out / SUMMARY_FILE, summary_text))
    return paths


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
