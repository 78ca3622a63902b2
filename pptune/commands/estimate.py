"""``pptune estimate MODEL_OR_PROFILE``: predict one configuration (or a JSONL batch of them) with the cost model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# The line keys, their checks and the building of one configuration live in pptune/batch_lines.py (shared
# with `pptune calibrate --runs`).
from pptune.batch_lines import BATCH_KEYS, defaults_of, estimate_item, parse_line, with_default_dtype
from pptune.model.spec import ATTENTION_KERNELS
from pptune.targets import SCHEDULES, TARGETS


def add_parser(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(
        name, help="predict step time, bubble, throughput and memory of one parallel configuration",
        description="Predict one configuration of MODEL_OR_PROFILE (a preset, a spec string 'gpt:layers=..,hidden=..,"
                    "heads=..' or a profile JSON) on --cluster with pptune's cost model; no GPU needed. With --batch, "
                    "read one configuration per JSONL line and print one JSON line per input line.",
    )
    p.add_argument("model", metavar="MODEL_OR_PROFILE", nargs="?", help="model preset, spec string or profile .json")
    p.add_argument("--cluster", help="cluster preset (a100-80g, h100-80g, ...) or cluster JSON")
    p.add_argument("--gpus", type=int, help="GPUs in the job; must equal tp * cp * pp * dp when given")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline stages (default 1)")
    p.add_argument("--dp", type=int, default=1, help="data-parallel size (default 1)")
    p.add_argument("--cp", type=int, default=1,
                   help="context-parallel size: each sequence split over cp ranks (Megatron; default 1)")
    p.add_argument("--micro-batch-size", type=int, default=1, help="samples per micro-batch (default 1)")
    p.add_argument("--global-batch-size", type=int, help="samples per optimizer step (micro * accumulation * dp)")
    p.add_argument("--schedule", choices=SCHEDULES, default="1f1b")
    p.add_argument("--vpp", type=int, default=1, help="model chunks per stage (interleaved_1f1b)")
    p.add_argument("--zero", type=int, choices=(0, 1, 2, 3), default=0, help="ZeRO stage (default 0)")
    p.add_argument("--recompute", default="none", help="none, selective (Megatron), full or every:K")
    p.add_argument("--partition", default="parameters", help="uniform, parameters, balanced or type:<regex>")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                   help="precision (default: a measured profile's own, else bf16)")
    p.add_argument("--target", choices=TARGETS, default="deepspeed")
    p.add_argument("--sequence-parallel", action="store_true", help="Megatron sequence parallelism (tp > 1)")
    add_knob_arguments(p)
    p.add_argument("--memory-headroom", type=float, default=0.0, metavar="GIB",
                   help="GiB of device memory to keep free: the summary's margin says whether the peak fits below it")
    p.add_argument("--json", action="store_true", help="print Estimate.to_json_dict() as one JSON object")
    p.add_argument("--timeline", action="store_true", help="with --json: include every op's start and end")
    p.add_argument("--batch", metavar="FILE.jsonl",
                   help="one configuration per line (keys: " + ", ".join(BATCH_KEYS) + "; values as on the command "
                        "line, null for the command line's value, sequence_parallel a JSON boolean, cluster also an "
                        "object); '-' reads stdin. Prints one "
                        "JSON line per input line, in order, each with its \"line\" number: the estimate, "
                        "{\"error\": \"line N: ...\"} for a bad line (the batch goes on), or {\"skipped\": \"blank "
                        "line\"} for a blank one. Exit code 0 when every line was estimated or blank, 2 when any "
                        "line failed")
    p.set_defaults(run=run)


def add_knob_arguments(p: Any) -> None:
    """--attention and Megatron's overlap flags (estimate and plan; the batch keys of the same names)."""
    p.add_argument("--attention", choices=ATTENTION_KERNELS, default=None,
                   help="attention kernel a preset or spec string is priced with: flash (default) or unfused "
                        "(a profile file's is the one it was made with)")
    p.add_argument("--overlap-grad-reduce", action=argparse.BooleanOptionalAction, default=None,
                   help="Megatron's --overlap-grad-reduce (default: on for --target megatron; DeepSpeed reduces "
                        "after the backward)")
    p.add_argument("--overlap-param-gather", action=argparse.BooleanOptionalAction, default=None,
                   help="Megatron's --overlap-param-gather (default: on with the distributed optimizer, ZeRO 1)")


def run(args: argparse.Namespace) -> int:
    from pptune.commands.estimate_report import summary

    if args.batch:
        return _run_batch(args)
    from pptune.profile.runtime_match import warn_mismatches

    item = with_default_dtype(defaults_of(args))
    if item["model"]:
        warn_mismatches(item["model"], dtype=item["dtype"], command="estimate")
    profile, cluster, config, est = estimate_item(item, timeline=args.timeline and args.json)
    if args.json:
        print(json.dumps(est.to_json_dict(timeline=args.timeline)))
    else:
        print(summary(profile, cluster, config, est, headroom_gib=args.memory_headroom))
    return 0


def _run_batch(args: argparse.Namespace) -> int:
    from pptune.errors import PptuneError, SchemaError

    defaults = defaults_of(args)
    try:
        data = sys.stdin.buffer.read() if args.batch == "-" else Path(args.batch).read_bytes()
    except OSError as exc:
        raise SchemaError(f"{args.batch}: cannot read batch file ({exc.strerror or exc})") from None
    failed = []
    # bytes.splitlines splits at \n, \r\n and \r only, so the numbers are the lines an editor shows
    for number, raw in enumerate(data.splitlines(), start=1):
        out: dict[str, Any] = {"line": number}
        try:
            line = raw.decode("utf-8")
            if not line.strip():
                out["skipped"] = "blank line"
            else:
                _, _, _, est = estimate_item(with_default_dtype(parse_line(line, number, defaults)))
                out.update(est.to_json_dict())
        except UnicodeDecodeError as exc:
            out["error"] = f"line {number}: not UTF-8 text (byte {exc.start + 1})"
        except PptuneError as exc:
            message = str(exc)
            out["error"] = message if message.startswith(f"line {number}:") else f"line {number}: {message}"
        except (ArithmeticError, ValueError, TypeError, RecursionError, MemoryError) as exc:
            # Not a checked input error: a defect of pptune. The batch goes on; the line says what happened.
            out["error"] = f"line {number}: internal error ({type(exc).__name__}: {exc}); please report it"
        if "error" in out:
            failed.append(number)
        print(json.dumps(out), flush=True)
    if failed:
        shown = ", ".join(map(str, failed[:10])) + (", ..." if len(failed) > 10 else "")
        print(f"pptune estimate: error: {len(failed)} of {number} batch lines failed "
              f"(line{'s' if len(failed) > 1 else ''} {shown})", file=sys.stderr)
        return 2
    return 0

