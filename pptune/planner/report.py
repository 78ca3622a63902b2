"""What ``pptune plan`` (and ``pptune demo``) report about a plan: the text summary and the ``--json`` one."""

from __future__ import annotations

from pathlib import Path

from pptune.cost.memory import memory_margin
from pptune.planner.ranking import config_label, format_table


def json_summary(result, out: Path) -> dict:
    """What ``pptune plan --json`` prints: the chosen configuration, its estimate and the search settings."""
    return {
        "out": str(out), "label": config_label(result.best), "config": result.best.to_dict(),
        "estimate": result.estimate.to_json_dict(), "search": result.settings.to_dict(),
        "evaluations": result.evaluations, "unique_configs": len(result.ranking),
        "search_seconds": round(result.search_seconds, 3),
    }


def text_report(result, out: Path, *, top: int) -> str:
    """What ``pptune plan`` prints: the ranking's top rows, then the recommendation with its breakdown."""
    e, s = result.estimate, result.settings
    feasible = int(result.ranking["feasible"].sum())
    how = f"{s.method}, {result.evaluations} trials" if s.method != "exhaustive" else f"exhaustive, {result.evaluations} configurations"
    lines = [
        f"{result.model.name} on {result.gpus} x {result.cluster.gpu.name}, global batch {result.global_batch_size}, "
        f"target {result.best.target}: {how}, {len(result.ranking)} distinct ({feasible} fit), "
        f"{result.search_seconds:.1f} s",
        "",
        format_table(result.ranking, top=top, memory_gib=result.cluster.gpu.memory_gib),
        "",
        f"recommended: {config_label(result.best)}",
        f"  {e.tokens_per_s:,.0f} tokens/s   step {e.step_time_ms:.1f} ms   bubble {e.bubble_fraction:.1%}   "
        f"peak memory {e.peak_memory_bytes / 2**30:.1f} GiB of {result.cluster.gpu.memory_gib:g} "
        f"({memory_margin(e.peak_memory_bytes, result.cluster.gpu.memory_bytes)})   MFU {e.mfu:.1%}",
        "  breakdown (ms): " + ", ".join(f"{k.removesuffix('_ms')} {v:.1f}" for k, v in e.breakdown.to_dict().items()),
        f"  stage boundaries: {list(e.boundaries)}",
        f"wrote {out}/ (HOW_TO_RUN.md, launch.sh, plan.json, ranking.csv ...)",
    ]
    return "\n".join(lines)
