"""``pptune plan MODEL_OR_PROFILE``: search configurations, rank them, write a ready-to-run plan directory."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from pptune.commands.estimate import add_knob_arguments
from pptune.targets import TARGETS, rules_for

RECOMPUTES = ("none", "selective", "full")
# --schedule: what some target plans with pp > 1, on request (zb_h1) included
PLANNED_SCHEDULES = tuple(dict.fromkeys(s for t in TARGETS for r in (rules_for(t, 2),)
                                        for s in r.planned_schedules + r.what_if_schedules))


def add_parser(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(
        name, help="search parallel configurations and emit DeepSpeed / Megatron-LM configs",
        description="Search tp x pp x dp, micro-batch size, schedule, ZeRO, recompute and layer split for MODEL_OR_PROFILE "
                    "(a preset, a spec string 'gpt:layers=..,hidden=..,heads=..' or a profile JSON) with Optuna, rank "
                    "every configuration by predicted tokens/s and write the best one's ds_config.json, pipeline.json, "
                    "launch.sh, megatron_args.txt and plan.json into --out.",
    )
    p.add_argument("model", metavar="MODEL_OR_PROFILE", help="model preset, spec string or profile .json")
    p.add_argument("--cluster", required=True, help="cluster preset (a100-80g, h100-80g, ...) or cluster JSON")
    p.add_argument("--gpus", type=int, required=True, help="number of GPUs (tp * pp * dp)")
    p.add_argument("--global-batch-size", type=int, required=True, help="samples per optimizer step")
    s = p.add_argument_group("search")
    s.add_argument("--trials", type=int, default=200, help="Optuna trials in total (default 200)")
    s.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    s.add_argument("--objective", choices=("throughput", "pareto"), default="throughput",
                   help="throughput: TPE on tokens/s; pareto: NSGA-II on tokens/s and peak memory")
    s.add_argument("--exhaustive", action="store_true", help="evaluate every configuration (no Optuna)")
    s.add_argument("--storage", default=None, help="Optuna RDB URL (default sqlite:///OUT/study.db)")
    s.add_argument("--study-name", default=None, help="study name (default derived from model, cluster, GPUs, batch)")
    s.add_argument("--resume", action="store_true", help="continue the stored study up to --trials finished trials")
    s.add_argument("--target", choices=TARGETS, default="deepspeed", help="framework (default deepspeed)")
    s.add_argument("--max-micro-batch-size", type=int, default=16, help="largest micro-batch size tried (default 16)")
    s.add_argument("--memory-headroom", type=float, default=0.0, metavar="GIB",
                   help="GiB of device memory every configuration must leave free (default 0)")
    s.add_argument("--zero-bubble", action="store_true", help="also try zb_h1 (Megatron target; a what-if)")
    s.add_argument("--tp-across-nodes", action="store_true",
                   help="also try tp groups spanning whole nodes (priced at the inter-node rate; tried anyway when "
                        "nothing inside a node fits)")
    f = p.add_argument_group("fix a dimension")
    f.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                   help="precision (default: a measured profile's own, else bf16)")
    f.add_argument("--tp", type=int, help="tensor-parallel size")
    f.add_argument("--pp", type=int, help="pipeline-parallel size")
    f.add_argument("--dp", type=int, help="data-parallel size")
    f.add_argument("--cp", type=int, help="context-parallel size (Megatron; default: searched for sequences of 32k tokens or more)")
    f.add_argument("--micro-batch-size", type=int, help="micro-batch size")
    f.add_argument("--zero", type=int, choices=(0, 1, 2, 3), help="ZeRO stage")
    f.add_argument("--recompute", help="none, selective (Megatron), full or every:K")
    f.add_argument("--schedule", choices=PLANNED_SCHEDULES, help="pipeline schedule")
    f.add_argument("--vpp", type=int, help="virtual stages per rank (interleaved_1f1b)")
    f.add_argument("--partition", help="uniform, parameters, balanced or type:<regex>")
    f.add_argument("--sequence-parallel", action=argparse.BooleanOptionalAction, default=None,
                   help="Megatron sequence parallelism (tp > 1)")
    add_knob_arguments(f)
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="plan directory (default results/<model>-<gpus>g)")
    o.add_argument("--ds-override", action="append", default=[], metavar="KEY=VALUE",
                   help="set a ds_config.json key, e.g. optimizer.params.lr=3e-4 (repeatable)")
    o.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    o.add_argument("--top", type=int, default=10, help="ranking rows to print (default 10)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    o.add_argument("--no-figures", action="store_true", help="do not draw the charts into OUT/figures")
    p.set_defaults(run=run)


def default_out(model: str, gpus: int) -> Path:
    stem = Path(model).stem if model.endswith(".json") else model
    return Path("results") / f"{re.sub(r'[^A-Za-z0-9.]+', '_', stem).strip('_')[:60]}-{gpus}g"


def _fixed(args: argparse.Namespace):
    from pptune.planner import Fixed

    return Fixed(tp=args.tp, pp=args.pp, dp=args.dp, cp=args.cp, micro_batch_size=args.micro_batch_size, zero_stage=args.zero,
                 recompute=args.recompute, schedule=args.schedule, vpp=args.vpp, partition=args.partition,
                 sequence_parallel=args.sequence_parallel)


def _cluster(args: argparse.Namespace) -> Any:
    """--cluster, with --memory-headroom GiB less device memory when given (``memory.with_memory_headroom``)."""
    if not args.memory_headroom:
        return args.cluster
    from pptune.cost.memory import with_memory_headroom
    from pptune.hardware import load_cluster

    return with_memory_headroom(load_cluster(args.cluster, num_gpus=args.gpus), args.memory_headroom)


def _check_numbers(args: argparse.Namespace) -> None:
    from pptune.errors import ConfigError

    for flag in ("gpus", "global_batch_size", "trials", "max_micro_batch_size", "top", "tp", "pp", "dp",
                 "micro_batch_size", "vpp"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be positive, got {value}")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from pptune.emit.deepspeed import check_overrides, parse_override
    from pptune.emit.plan_dir import PlanBuild, check_out_dir, write_plan_files
    from pptune.limits import check_job
    from pptune.planner import PlanSettings, plan
    from pptune.planner.report import json_summary, text_report
    from pptune.planner.study import redact_url
    from pptune.profile.runtime_match import default_dtype, warn_mismatches

    # Everything that can be refused is refused before any file is touched: numbers, bounds, overrides, --out.
    _check_numbers(args)
    check_job(global_batch_size=args.global_batch_size, gpus=args.gpus, micro_batch_size=args.micro_batch_size,
              max_micro_batch_size=args.max_micro_batch_size)
    overrides = check_overrides(dict(parse_override(o) for o in args.ds_override))
    out = check_out_dir(args.out or default_out(args.model, args.gpus))
    dtype = default_dtype(args.model, args.dtype)  # a measured profile's own unless --dtype says otherwise
    warn_mismatches(args.model, dtype=dtype, command="plan")
    own_study = args.storage is None and not args.exhaustive  # the study lives in OUT/study.db
    settings = PlanSettings(
        trials=args.trials, seed=args.seed, objective=args.objective, exhaustive=args.exhaustive, storage=None,
        study_name=args.study_name, resume=args.resume, replace_study=args.storage is None, target=args.target,
        dtype=dtype, fixed=_fixed(args), max_micro_batch_size=args.max_micro_batch_size,
        zero_bubble=args.zero_bubble, attention=args.attention, overlap_grad_reduce=args.overlap_grad_reduce,
        overlap_param_gather=args.overlap_param_gather, tp_across_nodes=args.tp_across_nodes,
    )
    # The plan (study, files, figures) is built beside OUT and renamed into place as one unit; any failure,
    # Ctrl-C included, removes what this run created and leaves an older OUT as it was.
    with PlanBuild(out, study=own_study) as build:
        storage = build.storage_url if own_study else args.storage
        result = plan(args.model, cluster=_cluster(args), gpus=args.gpus, global_batch_size=args.global_batch_size,
                      settings=dataclasses.replace(settings, storage=storage),
                      progress=not args.no_progress and not args.json)
        if own_study and result.study is not None:  # plan.json names the study where it will be, not where it ran
            ran = dataclasses.replace(result.settings, storage=redact_url(build.final_storage_url))
            result = dataclasses.replace(result, settings=ran)
        write_plan_files(result, build.staged, command=args.command_line, ds_overrides=overrides)
        if not args.no_figures:
            from pptune.draw.plan import draw_plan_figures  # matplotlib: imported only when drawing

            draw_plan_figures(build.staged)  # figures/*.png: bubble, micro-batch size, timeline, balance, Pareto
        build.commit()
    if args.json:
        print(json.dumps(json_summary(result, out), indent=1))
    else:
        print(text_report(result, out, top=args.top))
    return 0
