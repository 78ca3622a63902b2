"""``pptune plot PLAN_DIR``: redraw a plan's charts (bubble, micro-batch size, timeline, balance, Pareto)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(
        name, help="draw a plan's charts into PLAN_DIR/figures",
        description="Redraw the charts of a plan directory written by 'pptune plan': bubble vs micro-batches, "
                    "micro-batch size vs throughput and memory, the pipeline timeline, stage balance against "
                    "DeepSpeed's default split, and the search's Pareto front. A measured.json from 'pptune measure' "
                    "is overlaid when present.",
    )
    p.add_argument("plan_dir", metavar="PLAN_DIR", help="plan directory (plan.json, ranking.csv)")
    p.add_argument("--format", choices=("png", "svg"), default="png", help="image format (default png)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pptune.charts.plan_charts import plan_charts
    from pptune.draw.plan import draw_plan_figures
    from pptune.fileio import check_output_path

    check_output_path(Path(args.plan_dir) / "figures", kind="directory", flag="PLAN_DIR", replaced=True)
    charts = plan_charts(args.plan_dir)
    ctx = charts.context
    if ctx.drifted:
        print(f"pptune plot: warning: today's estimate ({ctx.estimate.step_time_ms:,.1f} ms) differs from plan.json's "
              f"({ctx.planned_step_ms:,.1f} ms): the profile or pptune changed since planning; the charts use today's",
              file=sys.stderr)
    for path in draw_plan_figures(args.plan_dir, fmt=args.format, charts=charts):
        print(path)
    return 0
