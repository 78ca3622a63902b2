"""``pptune estimate MODEL_OR_PROFILE``: predict one configuration (or a JSONL batch of them) with the cost model."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pptune.targets import SCHEDULES, TARGETS

# Batch-line keys and the CLI attribute that supplies each one's default.
BATCH_KEYS = {
    "model": "model", "cluster": "cluster", "gpus": "gpus", "tp": "tp", "pp": "pp", "dp": "dp",
    "micro_batch_size": "micro_batch_size", "global_batch_size": "global_batch_size", "schedule": "schedule",
    "vpp": "vpp", "zero": "zero", "recompute": "recompute", "partition": "partition", "dtype": "dtype",
    "target": "target", "sequence_parallel": "sequence_parallel",
}


def add_parser(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(
        name, help="predict step time, bubble, throughput and memory of one parallel configuration",
        description="Predict one configuration of MODEL_OR_PROFILE (a preset, a spec string 'gpt:layers=..,hidden=..,"
                    "heads=..' or a profile JSON) on --cluster with pptune's cost model; no GPU needed. With --batch, "
                    "read one configuration per JSONL line and print one JSON line per input line.",
    )
    p.add_argument("model", metavar="MODEL_OR_PROFILE", nargs="?", help="model preset, spec string or profile .json")
    p.add_argument("--cluster", help="cluster preset (a100-80g, h100-80g, ...) or cluster JSON")
    p.add_argument("--gpus", type=int, help="GPUs in the job; must equal tp * pp * dp when given")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline stages (default 1)")
    p.add_argument("--dp", type=int, default=1, help="data-parallel size (default 1)")
    p.add_argument("--micro-batch-size", type=int, default=1, help="samples per micro-batch (default 1)")
    p.add_argument("--global-batch-size", type=int, help="samples per optimizer step (micro * accumulation * dp)")
    p.add_argument("--schedule", choices=SCHEDULES, default="1f1b")
    p.add_argument("--vpp", type=int, default=1, help="model chunks per stage (interleaved_1f1b)")
    p.add_argument("--zero", type=int, choices=(0, 1, 2, 3), default=0, help="ZeRO stage (default 0)")
    p.add_argument("--recompute", default="none", help="none, selective (Megatron), full or every:K")
    p.add_argument("--partition", default="parameters", help="uniform, parameters, balanced or type:<regex>")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    p.add_argument("--target", choices=TARGETS, default="deepspeed")
    p.add_argument("--sequence-parallel", action="store_true", help="Megatron sequence parallelism (tp > 1)")
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


def run(args: argparse.Namespace) -> int:
    from pptune.commands.estimate_report import summary

    if args.batch:
        return _run_batch(args)
    item = {key: getattr(args, attr) for key, attr in BATCH_KEYS.items()}
    profile, cluster, config, est = estimate_item(item, timeline=args.timeline and args.json)
    if args.json:
        print(json.dumps(est.to_json_dict(timeline=args.timeline)))
    else:
        print(summary(profile, cluster, config, est))
    return 0


def estimate_item(item: dict, *, timeline: bool = False):
    """Build profile, cluster and config from one configuration dict and estimate it.

    Raises:
        PptuneError: bad numbers, unknown presets, malformed files (one line with the numbers).
    """
    from pptune.cost.estimate import estimate
    from pptune.errors import ConfigError
    from pptune.hardware import load_cluster
    from pptune.limits import check_job
    from pptune.parallel import ParallelConfig
    from pptune.profile.source import profile_for

    if not item.get("model"):
        raise ConfigError("no model: give MODEL_OR_PROFILE (a preset, a spec string or a profile .json)")
    if not item.get("cluster"):
        raise ConfigError("no cluster: give --cluster (a preset such as h100-80g, or a cluster JSON)")
    for key in ("tp", "pp", "dp", "micro_batch_size", "vpp", "gpus", "global_batch_size"):
        value = item.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    if item.get("global_batch_size") is None:
        raise ConfigError("--global-batch-size is required (samples per optimizer step)")
    tp, pp, dp = item["tp"], item["pp"], item["dp"]
    world = tp * pp * dp
    check_job(global_batch_size=item["global_batch_size"], gpus=world, micro_batch_size=item["micro_batch_size"],
              num_microbatches=max(1, item["global_batch_size"] // (item["micro_batch_size"] * dp)))
    if item.get("gpus") is not None and item["gpus"] != world:
        raise ConfigError(f"tp {tp} x pp {pp} x dp {dp} = {world} GPUs but {item['gpus']} GPUs were given")
    config = ParallelConfig.from_global_batch(
        global_batch_size=item["global_batch_size"], micro_batch_size=item["micro_batch_size"], dp=dp, tp=tp, pp=pp,
        schedule=item["schedule"], vpp=item["vpp"], zero_stage=item["zero"], recompute=item["recompute"],
        dtype=item["dtype"], partition=item["partition"], sequence_parallel=bool(item["sequence_parallel"]),
        target=item["target"],
    )
    spec = item["cluster"]
    # A cluster that states its size is taken as it is (estimate then checks tp*pp*dp against it);
    # a preset or an unsized file describes a node type and is sized to the job.
    cluster = load_cluster(spec) if _states_size(spec) else load_cluster(spec, num_gpus=world)
    profile = profile_for(item["model"], cluster, tp=tp, dtype=config.dtype,
                          micro_batch_sizes=(config.micro_batch_size,), sequence_parallel=config.sequence_parallel)
    return profile, cluster, config, estimate(profile, cluster, config, timeline=timeline)


def _states_size(spec: Any) -> bool:
    if isinstance(spec, dict):
        return "num_nodes" in spec
    if isinstance(spec, str) and spec.endswith(".json") and Path(spec).is_file():
        try:
            data = json.loads(Path(spec).read_text())
        except (OSError, json.JSONDecodeError):
            return False  # load_cluster reports the unreadable file with its own one-line error
        return isinstance(data, dict) and "num_nodes" in data
    return False


def _run_batch(args: argparse.Namespace) -> int:
    from pptune.errors import PptuneError, SchemaError

    defaults = {key: getattr(args, attr) for key, attr in BATCH_KEYS.items()}
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
                _, _, _, est = estimate_item(_batch_item(line, number, defaults))
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


# Batch keys whose value must be a string (beside the integers estimate_item checks); cluster may be an object.
_TEXT_KEYS = ("model", "schedule", "recompute", "partition", "dtype", "target")


def _batch_item(line: str, number: int, defaults: dict) -> dict:
    from pptune.errors import SchemaError

    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"line {number}: not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, arrays nested too deeply
        raise SchemaError(f"line {number}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SchemaError(f"line {number}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(BATCH_KEYS))
    if unknown:
        raise SchemaError(f"line {number}: unknown keys {unknown}; known: {', '.join(BATCH_KEYS)}")
    data = {key: value for key, value in data.items() if value is not None}  # null: the command line's value
    for key in _TEXT_KEYS:
        if key in data and not isinstance(data[key], str):
            raise SchemaError(f"line {number}: {key} must be a string, got {json.dumps(data[key])}")
    if "cluster" in data and not isinstance(data["cluster"], (str, dict)):
        raise SchemaError(f"line {number}: cluster must be a preset name, a cluster JSON path or an object, "
                          f"got {json.dumps(data['cluster'])}")
    if "sequence_parallel" in data and not isinstance(data["sequence_parallel"], bool):
        raise SchemaError(f"line {number}: sequence_parallel must be true or false, got "
                          f"{json.dumps(data['sequence_parallel'])}")
    if "zero" in data and (type(data["zero"]) is not int or data["zero"] not in (0, 1, 2, 3)):
        raise SchemaError(f"line {number}: zero must be 0, 1, 2 or 3, got {json.dumps(data['zero'])}")
    if isinstance(data.get("cluster"), str):
        data["cluster"] = os.path.expanduser(data["cluster"])
    return {**defaults, **data}
