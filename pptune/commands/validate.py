"""``pptune validate``: compare pptune's predictions with measured runs.

Two modes, one of them required:
- ``--published FILE``: published Megatron measurements (the A100 single-node CSV, see ``pptune.calibrate``);
  ``--fit`` refits the analytic model's constants on each split's fit part first and prints them.
- ``--local``: a grid of configurations trained with real DeepSpeed on this machine (options and run in
  ``pptune.commands.validate_local``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

PUBLISHED_OUT = "results/validation/published"
PUBLISHED_CLUSTER = "a100-80g"


def add_parser(subparsers: Any, name: str) -> None:
    from pptune.commands.validate_local import add_local_options

    p = subparsers.add_parser(
        name, help="compare predicted with measured step times (published runs, or real runs here)",
        description="--published FILE: predict every run of a published measurement file with pptune's analytic "
                    "profile and cost model and report mean/median/max errors on the fit and held-out parts of two "
                    "splits (random half; structural: deeper pipelines and the largest model held out). --local: "
                    "train a grid of configurations with real DeepSpeed on this machine and compare.",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--published", metavar="FILE", help="published measurements CSV (a100_megatron_single_node.csv)")
    mode.add_argument("--local", action="store_true", help="run a grid of configurations here with real DeepSpeed")
    p.add_argument("--out", default=None,
                   help=f"report folder (default {PUBLISHED_OUT} or results/validation/local)")
    g = p.add_argument_group("--published")
    g.add_argument("--fit", action="store_true", help="refit the constants on each split's fit part and print them")
    add_local_options(p)  # also --cluster: the cluster the published runs used (default a100-80g)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pptune.commands.validate_local import DEFAULT_OUT
    from pptune.fileio import check_output_path

    check_output_path(args.out or (DEFAULT_OUT if args.local else PUBLISHED_OUT), kind="directory", flag="--out")
    if args.local:
        from pptune.commands.validate_local import run_local

        return run_local(args)
    return _run_published(args)


def _run_published(args: argparse.Namespace) -> int:
    from pptune.calibrate.report import part_stats
    from pptune.calibrate.validate import validate_published

    out = args.out or PUBLISHED_OUT
    outcomes = validate_published(args.published, out=out, fit=args.fit, cluster=args.cluster or PUBLISHED_CLUSTER,
                                  command_line=getattr(args, "command_line", ""))
    for o in outcomes:
        for part, stats in part_stats(o.results).items():
            print(f"{o.split:10s} {part:8s} {stats.line()}")
        if args.fit:
            print(f"{o.split} constants: {json.dumps(o.constants.to_dict())}")
    print(f"report: {out}/summary.md")
    return 0
