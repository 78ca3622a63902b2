"""One configuration per JSON line: the keys ``pptune estimate --batch`` and ``pptune calibrate --runs`` read.

A line is a JSON object of ``BATCH_KEYS`` (values as on the command line; ``null`` takes the command line's
value). ``decode_line`` turns the text into an object, ``line_item`` checks its keys and values and fills in the
defaults, ``build_item`` makes the (profile, cluster, config) a line means and ``estimate_item`` predicts it. The
tables below are the only place a key is declared: a new key goes into ``BATCH_KEYS`` and, when it is not an
integer checked by ``build_item``, into ``TEXT_KEYS`` or ``BOOL_KEYS``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pptune.errors import ConfigError, SchemaError

# Batch-line keys and the CLI attribute that supplies each one's default.
BATCH_KEYS = {
    "model": "model", "cluster": "cluster", "gpus": "gpus", "tp": "tp", "pp": "pp", "dp": "dp", "cp": "cp",
    "micro_batch_size": "micro_batch_size", "global_batch_size": "global_batch_size", "schedule": "schedule",
    "vpp": "vpp", "zero": "zero", "recompute": "recompute", "partition": "partition", "dtype": "dtype",
    "target": "target", "sequence_parallel": "sequence_parallel", "attention": "attention",
    "overlap_grad_reduce": "overlap_grad_reduce", "overlap_param_gather": "overlap_param_gather",
}
# Batch keys whose value must be a string (beside the integers build_item checks); cluster may be an object.
TEXT_KEYS = ("model", "schedule", "recompute", "partition", "dtype", "target", "attention")
# Batch keys whose value must be a JSON boolean.
BOOL_KEYS = ("sequence_parallel", "overlap_grad_reduce", "overlap_param_gather")
# Batch keys whose value must be a positive integer.
INT_KEYS = ("tp", "pp", "dp", "cp", "micro_batch_size", "vpp", "gpus", "global_batch_size")


def defaults_of(args: Any) -> dict[str, Any]:
    """Every batch key's default from a parsed command line (an argparse Namespace or any object)."""
    return {key: getattr(args, attr, None) for key, attr in BATCH_KEYS.items()}


def decode_line(line: str, number: int) -> dict[str, Any]:
    """The JSON object of one line (SchemaError ``line N: ...`` otherwise)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"line {number}: not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, arrays nested too deeply
        raise SchemaError(f"line {number}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SchemaError(f"line {number}: expected a JSON object, got {type(data).__name__}")
    return data


def line_item(data: dict[str, Any], number: int, defaults: dict[str, Any], *,
              extra_keys: Iterable[str] = ()) -> dict[str, Any]:
    """One line's object checked and completed with ``defaults`` (``null`` values take the default).

    Args:
        data: the decoded line.
        number: its line number (for the messages).
        defaults: a value for every batch key (``defaults_of``).
        extra_keys: keys a caller reads itself (``calibrate --runs``: the measurements); they are only allowed.

    Raises:
        SchemaError: unknown keys or a value of the wrong type (``line N: ...``).
    """
    known = [*BATCH_KEYS, *extra_keys]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SchemaError(f"line {number}: unknown keys {unknown}; known: {', '.join(known)}")
    data = {key: value for key, value in data.items() if value is not None and key in BATCH_KEYS}
    for key in TEXT_KEYS:
        if key in data and not isinstance(data[key], str):
            raise SchemaError(f"line {number}: {key} must be a string, got {json.dumps(data[key])}")
    if "cluster" in data and not isinstance(data["cluster"], (str, dict)):
        raise SchemaError(f"line {number}: cluster must be a preset name, a cluster JSON path or an object, "
                          f"got {json.dumps(data['cluster'])}")
    for key in BOOL_KEYS:
        if key in data and not isinstance(data[key], bool):
            raise SchemaError(f"line {number}: {key} must be true or false, got {json.dumps(data[key])}")
    if "zero" in data and (type(data["zero"]) is not int or data["zero"] not in (0, 1, 2, 3)):
        raise SchemaError(f"line {number}: zero must be 0, 1, 2 or 3, got {json.dumps(data['zero'])}")
    if isinstance(data.get("cluster"), str):
        data["cluster"] = os.path.expanduser(data["cluster"])
    return {**defaults, **data}


def parse_line(line: str, number: int, defaults: dict[str, Any]) -> dict[str, Any]:
    """``decode_line`` then ``line_item``: one ``estimate --batch`` line as a complete configuration dict."""
    return line_item(decode_line(line, number), number, defaults)


def with_default_dtype(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` with its dtype resolved as ``pptune estimate`` resolves it: the one given, else a measured
    profile's own, else bf16 (``pptune.profile.runtime_match.default_dtype``)."""
    from pptune.profile.runtime_match import DEFAULT_DTYPE, default_dtype

    if item.get("dtype") is not None:
        return item
    model = item.get("model")
    return {**item, "dtype": default_dtype(model, None) if isinstance(model, str) else DEFAULT_DTYPE}


def build_item(item: dict[str, Any]):
    """(profile, cluster, config) of one configuration dict, the cluster sized to the job.

    Raises:
        PptuneError: bad numbers, unknown presets, malformed files (one line with the numbers).
    """
    from pptune.hardware import load_cluster
    from pptune.limits import check_job
    from pptune.parallel import ParallelConfig
    from pptune.profile.source import profile_for

    if not item.get("model"):
        raise ConfigError("no model: give MODEL_OR_PROFILE (a preset, a spec string or a profile .json)")
    if not item.get("cluster"):
        raise ConfigError("no cluster: give --cluster (a preset such as h100-80g, or a cluster JSON)")
    for key in INT_KEYS:
        value = item.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    if item.get("global_batch_size") is None:
        raise ConfigError("--global-batch-size is required (samples per optimizer step)")
    tp, pp, dp, cp = item["tp"], item["pp"], item["dp"], item.get("cp") or 1
    world = tp * cp * pp * dp
    check_job(global_batch_size=item["global_batch_size"], gpus=world, micro_batch_size=item["micro_batch_size"],
              num_microbatches=max(1, item["global_batch_size"] // (item["micro_batch_size"] * dp)))
    if item.get("gpus") is not None and item["gpus"] != world:
        tp_cp = f"{tp} x cp {cp}" if cp > 1 else f"{tp}"
        raise ConfigError(f"tp {tp_cp} x pp {pp} x dp {dp} = {world} GPUs but {item['gpus']} GPUs were given")
    config = ParallelConfig.from_global_batch(
        global_batch_size=item["global_batch_size"], micro_batch_size=item["micro_batch_size"], dp=dp, tp=tp, pp=pp,
        cp=cp, schedule=item["schedule"], vpp=item["vpp"], zero_stage=item["zero"], recompute=item["recompute"],
        dtype=item["dtype"], partition=item["partition"], sequence_parallel=bool(item["sequence_parallel"]),
        target=item["target"], overlap_grad_reduce=item.get("overlap_grad_reduce"),
        overlap_param_gather=item.get("overlap_param_gather"),
    )
    spec = item["cluster"]
    # A cluster that states its size is taken as it is (estimate then checks tp*pp*dp against it);
    # a preset or an unsized file describes a node type and is sized to the job.
    cluster = load_cluster(spec) if _states_size(spec) else load_cluster(spec, num_gpus=world)
    profile = profile_for(item["model"], cluster, tp=tp, dtype=config.dtype,
                          micro_batch_sizes=(config.micro_batch_size,), sequence_parallel=config.sequence_parallel,
                          attention=item.get("attention"))
    return profile, cluster, config


def estimate_item(item: dict[str, Any], *, timeline: bool = False):
    """Build profile, cluster and config from one configuration dict and estimate it.

    Raises:
        PptuneError: bad numbers, unknown presets, malformed files (one line with the numbers).
    """
    from pptune.cost.estimate import estimate

    profile, cluster, config = build_item(item)
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
