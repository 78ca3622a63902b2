"""The ranking table: every evaluated configuration with its estimate, best first, as a pandas DataFrame.

Order: feasible before infeasible, then tokens/s (higher first); equal predictions prefer the lower ZeRO stage
(ZeRO-2/3 add collectives a prediction may tie on but a real run pays for), then lower peak memory, then the
config label, so equal predictions rank the same way in every run.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from pptune.cost.types import Estimate
from pptune.parallel import ParallelConfig

GIB = 2**30
CONFIG_COLUMNS = ("label", "tp", "pp", "dp", "micro_batch_size", "num_microbatches", "schedule", "vpp", "zero_stage",
                  "recompute", "partition", "sequence_parallel", "dtype", "target", "cp")
ESTIMATE_COLUMNS = ("step_time_ms", "tokens_per_s", "samples_per_s", "tflops_per_gpu", "mfu", "bubble_fraction",
                    "peak_memory_gib", "feasible", "infeasible_reason")
BREAKDOWN_COLUMNS = ("compute_ms", "bubble_ms", "pp_comm_ms", "tp_comm_ms", "dp_comm_ms", "optimizer_ms", "overhead_ms",
                     "cp_comm_ms")


def config_label(config: ParallelConfig) -> str:
    """ParallelConfig.label() plus ``sp`` for sequence parallelism: unique within one search (dtype/target fixed)."""
    return config.label() + (" sp" if config.sequence_parallel else "")


def ranking_row(config: ParallelConfig, estimate: Estimate | None, *, error: str | None = None) -> dict:
    """One row: the configuration's fields, the estimate's figures and its breakdown parts.

    ``estimate`` is None when the cost model rejected the configuration; ``error`` then says why.
    """
    row: dict = {"label": config_label(config)}
    row.update({k: getattr(config, k) for k in CONFIG_COLUMNS[1:]})
    if estimate is None:
        row.update(dict.fromkeys(ESTIMATE_COLUMNS + BREAKDOWN_COLUMNS, float("nan")))
        row.update(feasible=False, infeasible_reason=error or "rejected by the cost model", tokens_per_s=0.0)
        row["boundaries"] = ""
        return row
    row.update(
        step_time_ms=estimate.step_time_ms, tokens_per_s=estimate.tokens_per_s, samples_per_s=estimate.samples_per_s,
        tflops_per_gpu=estimate.tflops_per_gpu, mfu=estimate.mfu, bubble_fraction=estimate.bubble_fraction,
        peak_memory_gib=estimate.peak_memory_bytes / GIB, feasible=bool(estimate.feasible),
        infeasible_reason=estimate.infeasible_reason or "",
    )
    row.update(estimate.breakdown.to_dict())
    row["boundaries"] = " ".join(str(b) for b in estimate.boundaries)
    return row


def ranking_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows to a DataFrame in ranking order with a ``rank`` column (1 = best)."""
    columns = list(CONFIG_COLUMNS + ESTIMATE_COLUMNS + BREAKDOWN_COLUMNS) + ["boundaries"]
    df = pd.DataFrame(list(rows), columns=columns)
    if df.empty:
        df.insert(0, "rank", pd.Series(dtype=int))
        return df
    df["feasible"] = df["feasible"].astype(bool)
    df = df.sort_values(
        by=["feasible", "tokens_per_s", "zero_stage", "peak_memory_gib", "label"],
        ascending=[False, False, True, True, True],
        kind="mergesort", na_position="last",
    ).reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


def mark_pareto(df: pd.DataFrame) -> pd.DataFrame:
    """Add a ``pareto`` column: feasible rows no other feasible row beats on both tokens/s and peak memory."""
    out = df.copy()
    out["pareto"] = False
    feasible = out[out["feasible"]].sort_values(["tokens_per_s", "peak_memory_gib"], ascending=[False, True],
                                                kind="mergesort")
    best_mem = float("inf")
    # In tokens/s order (ties: lower memory first) a row is on the front when its memory is below every faster row's.
    for i, mem in feasible["peak_memory_gib"].items():
        if mem < best_mem:
            out.at[i, "pareto"] = True
            best_mem = mem
    return out


def format_table(df: pd.DataFrame, *, top: int = 10, memory_gib: float | None = None) -> str:
    """The first ``top`` rows as a fixed-width text table for the terminal; with ``memory_gib`` (the device's, less
    any headroom) a row that fits says how much memory it leaves."""
    if df.empty:
        return "(no configurations evaluated)"
    head = df.head(top)
    width = max(48, *(len(str(label)) for label in head["label"]))  # type:<regex> splits make long labels
    lines = [f"{'#':>3}  {'configuration':<{width}} {'tokens/s':>11} {'step ms':>9} {'bubble':>7} {'mem GiB':>8} "
             f"{'MFU':>6}  fits"]
    for _, r in head.iterrows():
        fits = "yes" if r["feasible"] else f"no: {r['infeasible_reason']}"
        if r["feasible"] and memory_gib is not None:
            fits = f"yes, {memory_gib - r['peak_memory_gib']:.1f} GiB to spare"
        lines.append(
            f"{int(r['rank']):>3}  {r['label']:<{width}} {r['tokens_per_s']:>11,.0f} {r['step_time_ms']:>9.1f} "
            f"{100 * r['bubble_fraction']:>6.1f}% {r['peak_memory_gib']:>8.1f} {100 * r['mfu']:>5.1f}%  {fits}"
        )
    if len(df) > top:
        lines.append(f"     ... {len(df) - top} more in ranking.csv")
    return "\n".join(lines)
