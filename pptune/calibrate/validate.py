"""``pptune validate --published``: evaluate (or refit and evaluate) the analytic model on published runs.

Without ``fit``: the cluster preset's committed constants predict every row; rows are labelled by the random
split those constants were fitted on. With ``fit``: the constants are refitted on the fit part of each split
(random and structural, see ``pptune.calibrate.fit``) and each split is reported with its own constants.
Writes, under ``out``: ``predictions_<split>.csv``, ``predicted_vs_measured_<split>.png``, ``summary.md``
and, with ``fit``, ``constants.json``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from pptune.calibrate.constants import A100_MAMF_EFFICIENCY, Constants
from pptune.calibrate.fit import SPLITS, FitResult, fit_constants, held_out
from pptune.calibrate.predict import predict_rows
from pptune.calibrate.published import load_published
from pptune.calibrate.report import (
    ANCHORS,
    RowResult,
    constants_table,
    errors_table,
    part_stats,
    rows_csv,
    worst_rows,
    write_text,
)
from pptune.hardware import load_cluster


@dataclass(frozen=True, kw_only=True, slots=True)
class SplitOutcome:
    """One split: the constants that predicted it and every row's result."""

    split: str
    constants: Constants
    results: tuple[RowResult, ...]
    fit: FitResult | None = None


def validate_published(path: str | os.PathLike, *, out: str | os.PathLike, fit: bool = False,
                       cluster: str = "a100-80g", command_line: str = "") -> list[SplitOutcome]:
    """Predict every published row, write the report files under ``out`` and return the outcomes.

    Raises:
        SchemaError: a malformed data file or unknown cluster.
        PptuneError: ``fit`` without scipy.
    """
    rows = load_published(path)
    base = load_cluster(cluster)
    committed = Constants.of(base)
    outcomes = []
    for split in SPLITS if fit else ("random",):
        held = held_out(rows, split)
        result = None
        constants = committed
        if fit:
            result = fit_constants([r for r, h in zip(rows, held, strict=True) if not h], base)
            constants = result.constants
        predicted = predict_rows(rows, base, constants)
        outcomes.append(SplitOutcome(split=split, constants=constants, fit=result, results=tuple(
            RowResult(row=r, predicted_ms=p, held_out=h) for r, p, h in zip(rows, predicted, held, strict=True))))
    _write(outcomes, Path(out), Path(path), base.name, fit, command_line)
    return outcomes


def _write(outcomes: list[SplitOutcome], out: Path, data: Path, cluster: str, fit: bool, command_line: str) -> None:
    from pptune.draw.calibration import save_predicted_vs_measured

    for o in outcomes:
        write_text(out / f"predictions_{o.split}.csv", rows_csv(o.results))
        origin = f"fitted on the {o.split} split's fit part" if fit else "committed constants"
        save_predicted_vs_measured(o.results, out / f"predicted_vs_measured_{o.split}.png",
                                   title=f"{data.name} on {cluster}: {o.split} split, {origin}")
    if fit:
        write_text(out / "constants.json", json.dumps(
            {o.split: {**o.constants.to_dict(), "rms_relative_error": o.fit.rms_relative_error if o.fit else None}
             for o in outcomes}, indent=1) + "\n")
    write_text(out / "summary.md", summary_markdown(outcomes, data=data, cluster=cluster, fit=fit,
                                                    command_line=command_line))


def summary_markdown(outcomes: list[SplitOutcome], *, data: Path, cluster: str, fit: bool, command_line: str) -> str:
    """The report: how it was made, the constants, the errors per split and part, the worst rows."""
    digest = hashlib.sha256(data.read_bytes()).hexdigest()[:16]
    splits = {o.split: part_stats(o.results) for o in outcomes}
    rows = len(outcomes[0].results)
    text = [
        f"# Analytic model vs published measurements: {data.name}",
        "",
        f"- command: `{command_line or 'pptune validate --published ' + str(data)}`",
        f"- date: {datetime.date.today().isoformat()}; machine: {platform.node() or 'unknown'} "
        f"({platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs); no GPU is needed",
        f"- data: `{data}` ({rows} rows, sha256 {digest}...), cluster preset `{cluster}`",
        "- every row is predicted by pptune's own path: analytic profile (fp16, unfused attention) -> "
        "`pptune.cost.estimate` (1F1B, full recompute, DeepSpeed engine, ZeRO 0; see pptune/calibrate/published.py)",
        f"- the GEMM plateau `matmul_efficiency` is fixed at {A100_MAMF_EFFICIENCY:.3f} (Stas Bekman's measured "
        "A100 maximum achievable matmul rate, stas00/ml-engineering); the other constants are "
        + ("fitted per split on its fit part (least squares on relative errors)" if fit else
           "the committed ones (fitted on the random split's fit part)"),
        "",
        "## Constants",
        "",
        constants_table({o.split + (" split" if fit else " (committed)"): o.constants for o in outcomes}),
        "",
        "## Errors (|predicted / measured - 1|)",
        "",
        errors_table(splits),
        "",
        f"Published planners for comparison: {ANCHORS}.",
        "",
        "Splits: `random` holds out a seeded half of the rows; `structural` holds out every 4-stage pipeline and "
        "every run of the largest model (h 2048, 24 layers), so its constants must extrapolate.",
        "",
    ]
    for o in outcomes:
        text += [f"## Largest errors, {o.split} split", "", worst_rows(o.results), ""]
    return "\n".join(text)
