"""What ``pptune tune`` reports: every trial (predicted vs measured, or why it failed) and best measured vs best predicted."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from pptune.fileio import write_text_atomic
from pptune.planner.ranking import config_label

CSV_FILE = "tune.csv"
COLUMNS = ("trial", "state", "label", "predicted_rank", "predicted_ms", "measured_ms", "error", "measured_tokens_per_s",
           "repeat_of", "failure_kind", "failure", "plan_dir")


def trial_rows(study: Any, predicted_rank: dict[str, int]) -> list[dict[str, Any]]:
    """One row per finished trial, in trial order (``predicted_rank``: label -> rank in the cost model's ranking)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in ("COMPLETE", "FAIL"):
            continue
        a = t.user_attrs
        pred, meas = a.get("predicted_ms"), a.get("measured_ms")
        rows.append({
            "trial": t.number, "state": t.state.name, "label": a.get("label", ""),
            "predicted_rank": predicted_rank.get(a.get("label", "")), "predicted_ms": pred, "measured_ms": meas,
            "error": (pred - meas) / meas if pred is not None and meas is not None and t.state.name == "COMPLETE" else None,
            "measured_tokens_per_s": t.value if t.state.name == "COMPLETE" else None,
            "repeat_of": a.get("repeat_of"), "failure_kind": a.get("failure_kind", ""), "failure": a.get("failure", ""),
            "plan_dir": a.get("plan_dir", ""),
        })
    return rows


def csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]))
                         for k in COLUMNS})
    return buf.getvalue()


def write_csv(rows: list[dict[str, Any]], out_dir: str | os.PathLike) -> Path:
    return write_text_atomic(Path(out_dir) / CSV_FILE, csv_text(rows))


def best_lines(rows: list[dict[str, Any]], predicted_best: str) -> list[str]:
    """Measured best against the cost model's predicted best (both measured when the top-1 seed ran)."""
    done = [r for r in rows if r["state"] == "COMPLETE" and r["repeat_of"] is None]
    if not done:
        return ["no trial completed: nothing measured"]
    best = max(done, key=lambda r: r["measured_tokens_per_s"])
    lines = [f"measured best: {best['label']} (trial {best['trial']}): {best['measured_tokens_per_s']:,.0f} tokens/s, "
             f"step {best['measured_ms']:.1f} ms; the cost model ranked it #{best['predicted_rank']}"]
    top = next((r for r in done if r["label"] == predicted_best), None)
    if top is None:
        lines.append(f"predicted best: {predicted_best}: not measured (failed or not yet run)")
    elif top is best:
        lines.append(f"predicted best: {predicted_best}: the measured best as well")
    else:
        gap = best["measured_tokens_per_s"] / top["measured_tokens_per_s"] - 1
        lines.append(f"predicted best: {predicted_best} (trial {top['trial']}): {top['measured_tokens_per_s']:,.0f} "
                     f"tokens/s measured; the measured best is {gap:.1%} faster")
    return lines


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'trial':>5} {'state':<8} {'rank':>4} {'predicted':>10} {'measured':>10} {'error':>7}  configuration"]
    for r in rows:
        meas = "" if r["measured_ms"] is None else f"{r['measured_ms']:.1f}"
        pred = "" if r["predicted_ms"] is None else f"{r['predicted_ms']:.1f}"
        err = "" if r["error"] is None else f"{r['error']:+.1%}"
        note = f"  [{r['failure_kind']}: {r['failure'][:120]}]" if r["state"] == "FAIL" else ""
        rep = f"  (repeat of trial {r['repeat_of']})" if r["repeat_of"] is not None else ""
        rank = "" if r["predicted_rank"] is None else str(r["predicted_rank"])
        lines.append(f"{r['trial']:>5} {r['state']:<8} {rank:>4} {pred:>10} {meas:>10} {err:>7}  {r['label']}{rep}{note}")
    return lines


def predicted_ranks(ranking: Any) -> dict[str, int]:
    return {str(label): int(rank) for label, rank in zip(ranking["label"], ranking["rank"], strict=True)}


def predicted_best_label(result: Any) -> str:
    return config_label(result.best)
