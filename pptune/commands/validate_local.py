"""The ``--local`` half of ``pptune validate``: options and run (the command itself lives in validate.py)."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_OUT = "results/validation/local"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_local_options(p: Any) -> None:
    """Register the options of ``--local`` on parser ``p``."""
    from pptune.validation.grid import DEFAULT_GLOBAL_BATCH, DEFAULT_MODEL

    g = p.add_argument_group("--local: real runs on this machine (2 ranks)")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"model to profile and train (default {DEFAULT_MODEL})")
    g.add_argument("--global-batch-size", type=int, default=DEFAULT_GLOBAL_BATCH,
                   help=f"samples per step, the same for every configuration (default {DEFAULT_GLOBAL_BATCH})")
    g.add_argument("--micro-batch-sizes", type=_ints, default=None, metavar="1,2,4",
                   help="micro-batch sizes to try (default: powers of two up to the global batch)")
    g.add_argument("--partitions", default="uniform,balanced",
                   help="layer splits for pp=2, comma-separated (default uniform,balanced)")
    g.add_argument("--no-data-parallel", action="store_true", help="leave out the pp=1 x dp=2 configurations")
    g.add_argument("--no-tensor-parallel", action="store_true",
                   help="leave out the pp=1 x tp=2 configurations and the pp=2 x tp=2 correctness run")
    g.add_argument("--steps", type=int, default=15, help="timed steps per run (default 15)")
    g.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is stopped (default 600)")
    g.add_argument("--profile", default=None, help="use this profile JSON instead of profiling the model")
    g.add_argument("--cluster", default=None, help="use this cluster JSON instead of probing the links")
    g.add_argument("--no-calibrate", action="store_true", help="skip the leave-one-out calibration")
    g.add_argument("--retries", type=int, default=2,
                   help="extra runs of a configuration during which other processes used more than "
                        "--max-foreign of the machine (default 2)")
    g.add_argument("--max-foreign", type=float, default=0.1,
                   help="share of the machine other processes may use during a run (default 0.1)")
    g.add_argument("--quiet-wait", type=float, default=120.0,
                   help="before each run, wait up to this many seconds for other processes to go quiet (default 120)")
    g.add_argument("--profile-repeat", type=int, default=10, help="timed iterations per layer (default 10)")
    g.add_argument("--profile-copies", type=int, default=2,
                   help="profile as this many concurrent 1-thread processes, the ranks' contention (default 2)")
    g.add_argument("--profile-passes", type=int, default=2,
                   help="contended profiles to take; each layer and size keeps its fastest (default 2)")


def settings_from(args: argparse.Namespace):
    from pptune.errors import ConfigError
    from pptune.validation.local import LocalSettings

    for flag in ("global_batch_size", "steps", "timeout", "profile_repeat", "profile_copies", "profile_passes"):
        if getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.warmup < 0 or args.retries < 0 or args.quiet_wait < 0 or not 0 <= args.max_foreign <= 1:
        raise ConfigError(f"need --warmup >= 0, --retries >= 0 and 0 <= --max-foreign <= 1; got {args.warmup}, "
                          f"{args.retries}, {args.max_foreign}")
    partitions = tuple(p.strip() for p in args.partitions.split(",") if p.strip())
    if not partitions:
        raise ConfigError("--partitions needs at least one of uniform, parameters, balanced, type:<regex>")
    return LocalSettings(
        model=args.model, global_batch_size=args.global_batch_size, partitions=partitions,
        micro_batch_sizes=args.micro_batch_sizes, data_parallel=not args.no_data_parallel,
        tensor_parallel=not args.no_tensor_parallel, steps=args.steps,
        warmup=args.warmup, timeout_s=args.timeout, profile_repeat=args.profile_repeat,
        profile_copies=args.profile_copies, profile_passes=args.profile_passes, profile_path=args.profile,
        cluster_path=args.cluster, calibrate=not args.no_calibrate, retries=args.retries, max_foreign=args.max_foreign,
        quiet_wait_s=args.quiet_wait,
    )


def run_local(args: argparse.Namespace) -> int:
    """Run the local validation and write its report into ``--out``."""
    from pptune.validation.local import validate_local
    from pptune.validation.report import print_lines, write_report
    from pptune.validation.summary import summary_markdown

    settings = settings_from(args)
    out = args.out or DEFAULT_OUT
    command = getattr(args, "command_line", None)
    result = validate_local(settings, out, command=command, log=lambda line: print(line, flush=True))
    paths = write_report(result, out, command=command, summary_text=summary_markdown(result, command=command))
    for line in print_lines(result):
        print(line)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0 if result.measured else 1
