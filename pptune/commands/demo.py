"""``pptune demo``: the embedded default job (profile a small GPT here, plan, emit, draw, recommend)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(name, help="profile a small GPT on this CPU, plan it for 2 local ranks, emit configs and charts")
    p.add_argument("--out", default="results/demo", help="output directory (default results/demo)")
    p.add_argument("--model", default=None, help="MODEL to profile instead of the small default GPT")
    p.add_argument("--repeat", type=int, default=5, help="timed repeats per layer (default 5)")
    p.add_argument("--measure", action="store_true", help="also run the plan with real DeepSpeed and compare")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pptune.demo import DEMO_MODEL, run_demo
    from pptune.errors import ConfigError
    from pptune.fileio import check_output_path

    out = check_output_path(args.out, kind="directory", flag="--out", replaced=True)  # the demo replaces OUT whole
    if out.is_dir() and any(out.iterdir()) and not ((out / "profile.json").exists() or (out / "plan").is_dir()):
        raise ConfigError(f"--out {out}: exists and is not a pptune demo directory (no profile.json or plan/); "
                          "choose another path")
    result = run_demo(args.out, model=args.model or DEMO_MODEL, repeat=args.repeat, measure=args.measure,
                      progress=not args.no_progress, command=args.command_line)
    print(result.summary)
    print(f"profile: {result.profile_path}")
    print("figures: " + ", ".join(str(f) for f in result.figures))
    print(f"launch it: bash {result.plan_dir}/launch.sh   (see {result.plan_dir}/HOW_TO_RUN.md)")
    return 0
