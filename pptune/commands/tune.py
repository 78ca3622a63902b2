"""``pptune tune MODEL --gpus N --global-batch-size G --cluster C``: Optuna over real runs, seeded by the cost model."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(
        name, help="search configurations by really running them, seeded with the cost model's top-k",
        description="Rank every configuration with the cost model, then run an Optuna study whose trials train "
                    "real DeepSpeed runs on this machine: the cost model's top-k first (enqueued), then TPE. "
                    "Failed, out-of-memory and timed-out runs are failed trials with their reason. Reports the "
                    "measured best against the predicted best; writes OUT/trials/*/ (plan directories with "
                    "measured.json), OUT/tune.csv and the study (OUT/tune.db unless --storage).",
    )
    p.add_argument("model", metavar="MODEL_OR_PROFILE", help="model preset, spec string or profile .json")
    p.add_argument("--gpus", type=int, required=True, help="ranks (tp * pp * dp); each trial starts this many processes")
    p.add_argument("--global-batch-size", type=int, required=True, help="samples per optimizer step")
    p.add_argument("--cluster", required=True, help="cluster preset or JSON (e.g. a probed or calibrated local one)")
    p.add_argument("--top-k", type=int, default=4, help="cost-model configurations to run first (default 4)")
    p.add_argument("--trials", type=int, default=8, help="finished trials in total, failures included (default 8)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per run before it is stopped (default 600)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per run (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--seed", type=int, default=0, help="TPE seed (default 0)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default=None,
                   help="precision (default: a measured profile's own, else fp32: many CPUs run bf16 slowly)")
    p.add_argument("--max-micro-batch-size", type=int, default=16, help="largest micro-batch size (default 16)")
    p.add_argument("--storage", default=None,
                   help="Optuna RDB URL or journal:PATH (Optuna's journal file; default sqlite:///OUT/tune.db)")
    p.add_argument("--resume", action="store_true", help="continue the stored study up to --trials finished trials")
    p.add_argument("--worker", action="store_true",
                   help="one of several workers on the study in --storage (an RDB URL, or journal:PATH on a shared "
                        "file system): each runs its own trials, none runs a configuration another ran or runs; "
                        "give each worker its own --seed and --out")
    p.add_argument("--out", default=None, help="output directory (default results/tune/<model>-<gpus>g)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pptune.commands.plan import default_out
    from pptune.errors import ConfigError
    from pptune.fileio import check_output_path
    from pptune.planner import PlanSettings
    from pptune.tune import STUDY_FILE, TuneSettings, tune
    from pptune.tune_report import best_lines, predicted_best_label, predicted_ranks, table_lines, trial_rows, write_csv

    for flag in ("gpus", "global_batch_size", "top_k", "trials", "steps", "max_micro_batch_size"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    out = args.out or str(default_out(args.model, args.gpus)).replace("results/", "results/tune/", 1)
    check_output_path(out, kind="directory", flag="--out")
    settings = TuneSettings(top_k=args.top_k, trials=args.trials, timeout_s=args.timeout, steps=args.steps,
                            warmup=args.warmup, seed=args.seed)
    result, study = tune(args.model, cluster=args.cluster, gpus=args.gpus, global_batch_size=args.global_batch_size,
                         out_dir=out, settings=settings, storage=args.storage, resume=args.resume,
                         plan_settings=PlanSettings(exhaustive=True, dtype=_dtype(args),
                                                    max_micro_batch_size=args.max_micro_batch_size),
                         command=getattr(args, "command_line", None), log=lambda line: print(line, flush=True),
                         shared=args.worker)
    rows = trial_rows(study, predicted_ranks(result.ranking))
    print("\n".join(table_lines(rows)))
    print("\n".join(best_lines(rows, predicted_best_label(result))))
    where = args.storage or f"{out}/{STUDY_FILE}"
    print(f"wrote {write_csv(rows, out)}, {out}/trials/ (study: {where})")
    return 0


def _dtype(args: argparse.Namespace) -> str:
    """--dtype, else a measured profile's own (its timings are in it), else fp32; a mismatch is said on stderr."""
    from pptune.profile.runtime_match import measured_profile, warn_mismatches

    profile = measured_profile(args.model)
    dtype = args.dtype or (profile.dtype if profile is not None else "fp32")
    warn_mismatches(args.model, dtype=dtype, command="tune")
    return dtype
