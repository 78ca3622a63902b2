"""The contents of a plan directory, computed from a PlanResult (no I/O here; plan_dir.py writes them).

Nothing time-dependent goes into these files, so the same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pptune import __version__
from pptune.emit.deepspeed import ds_config, engine_kind
from pptune.emit.howto import how_to_run
from pptune.emit.launch import deepspeed_launch, hostfile_example, megatron_launch, node_layout
from pptune.emit.megatron import check_megatron_args, format_args, megatron_args
from pptune.emit.megatron_deepspeed import check_megatron_deepspeed_args, megatron_deepspeed_args
from pptune.emit.megatron_deepspeed import header_lines as megatron_deepspeed_header
from pptune.errors import ConfigError
from pptune.planner.ranking import config_label
from pptune.targets import rules_for

if TYPE_CHECKING:
    from pptune.planner import PlanResult

DS_METHODS = ("uniform", "parameters")
EXECUTABLE = 0o755
REGULAR = 0o644


def dumps(obj: Any) -> str:
    """JSON with one key per line but lists of numbers or strings kept on one line (readable layer lists)."""

    def enc(o: Any, depth: int) -> str:
        pad = " " * (depth + 1)
        if isinstance(o, dict):
            if not o:
                return "{}"
            items = [f"{pad}{json.dumps(str(k))}: {enc(v, depth + 1)}" for k, v in o.items()]
            return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
        if isinstance(o, (list, tuple)) and any(isinstance(x, (dict, list, tuple)) for x in o):
            items = [f"{pad}{enc(v, depth + 1)}" for v in o]
            return "[\n" + ",\n".join(items) + "\n" + " " * depth + "]"
        return json.dumps(list(o) if isinstance(o, tuple) else o)

    return enc(obj, 0) + "\n"


def partition_method(partition: str) -> str:
    """The ``partition_method`` DeepSpeed's PipelineModule takes, or ``explicit`` when none reproduces the split."""
    return partition if partition in DS_METHODS or partition.startswith("type:") else "explicit"


def summary(result: PlanResult) -> str:
    e = result.estimate
    return (f"{e.tokens_per_s:,.0f} tokens/s, step {e.step_time_ms:.1f} ms, bubble {e.bubble_fraction:.1%}, "
            f"peak {e.peak_memory_bytes / 2**30:.1f} GiB per GPU")


def pipeline_json(result: PlanResult) -> dict[str, Any]:
    """The PipelineModule arguments DeepSpeed's JSON cannot hold (read by pptune.runtime.plan_files)."""
    c, e, profile = result.best, result.estimate, result.profile
    names = [layer.name for layer in profile.layers]
    b = list(e.boundaries)
    method = partition_method(c.partition)
    return {
        "num_stages": c.pp,
        "topology": {"pp": c.pp, "tp": c.tp, "dp": c.dp},
        "sequence_parallel": c.sequence_parallel,
        "partition_method": method,
        "planned_partition": c.partition,
        # DeepSpeed's PipelineModule.parts: chunk i holds layers [boundaries[i], boundaries[i + 1]).
        "boundaries": b,
        "vpp": c.vpp,
        "activation_checkpoint_interval": c.recompute_interval,
        "engine": engine_kind(c) if c.target == "deepspeed" else "megatron",
        "model": result.model.text if result.model.profile_path is None else result.model.name,
        "model_spec": result.model.spec.to_dict() if result.model.spec else None,
        "seq_len": profile.seq_len,
        "micro_batch_size": c.micro_batch_size,
        "num_microbatches": c.num_microbatches,
        "schedule": c.schedule,
        "dtype": c.dtype,
        "layers": names,
        "stage_layers": [names[lo:hi] for lo, hi in zip(b, b[1:], strict=False)],
    }


def plan_json(result: PlanResult, *, command: str | None, files: list[str]) -> dict[str, Any]:
    s = result.settings
    ranking = result.ranking
    return {
        "pptune_version": __version__,
        "command": command,
        "target": result.best.target,
        "model": {"name": result.model.name, "source": result.model.text, "seq_len": result.model.seq_len,
                  "spec": result.model.spec.to_dict() if result.model.spec else None},
        "profile": result.model.profile_label(result.cluster),
        "cluster": result.cluster.to_dict(),
        "gpus": result.gpus,
        "global_batch_size": result.global_batch_size,
        "label": config_label(result.best),
        "config": result.best.to_dict(),
        "estimate": result.estimate.to_json_dict(),
        "search": {
            **s.to_dict(), "evaluations": result.evaluations, "unique_configs": len(ranking),
            "feasible_configs": int(ranking["feasible"].sum()), "space": result.space.to_dict(),
        },
        "files": files,
    }


def megatron_text(result: PlanResult) -> str:
    """megatron_args.txt: the flags, checked by check_megatron_args, or comment lines saying why there are none."""
    c = result.best
    head = [f"Megatron-LM flags for pptune plan {config_label(c)} ({summary(result)}).",
            "Feed them with: $(grep -v '^#' megatron_args.txt); add data, tokenizer, lr and iteration flags."]
    if not rules_for(c.target, c.pp).overlap_grad_reduce:
        head.append("Planned for DeepSpeed: the prediction assumed DeepSpeed's engine (no overlap of the gradient reduction).")
    if c.schedule == "zb_h1":
        return format_args([], head + ["zb_h1 is not in mainline Megatron-LM (see the zero-bubble fork); no flags."])
    spec = result.model.spec
    if spec is None:
        return format_args([], head + ["The profile carries no model spec (layers, hidden, heads): no flags."])
    roles = [layer.role for layer in result.profile.layers]
    try:
        args = megatron_args(c, spec, roles=roles, boundaries=result.estimate.boundaries)
    except ConfigError as exc:
        return format_args([], head + [f"No Megatron-LM equivalent: {exc}."])
    check_megatron_args(args, world_size=c.world_size)  # a failure here is a pptune bug: let it raise
    return format_args(args, head)


def megatron_deepspeed_text(result: PlanResult, partition: str, ds_config_text: str) -> str:
    """megatron_deepspeed_args.txt: pretrain_gpt.py flags with ds_config.json, checked against Megatron-DeepSpeed."""
    c = result.best
    assert result.model.spec is not None
    args = megatron_deepspeed_args(c, result.model.spec)
    check_megatron_deepspeed_args(args, world_size=c.world_size, ds_config=json.loads(ds_config_text))  # else a bug
    nodes, per_node = node_layout(c, result.cluster)
    return format_args(args, [f"pptune plan {config_label(c)} ({summary(result)}).",
                              *megatron_deepspeed_header(c, partition, nodes=nodes, per_node=per_node)])


def plan_files(result: PlanResult, *, command: str | None = None,
               ds_overrides: dict[str, Any] | None = None) -> dict[str, tuple[str, int]]:
    """File name -> (text, mode) of the plan directory (without study.db and ranking.csv)."""
    c = result.best
    label, text = config_label(c), summary(result)
    files: dict[str, tuple[str, int]] = {}
    pipe = pipeline_json(result)
    files["pipeline.json"] = (dumps(pipe), REGULAR)
    if c.target == "deepspeed":
        files["ds_config.json"] = (dumps(ds_config(c, overrides=ds_overrides)), REGULAR)
        files["launch.sh"] = (deepspeed_launch(c, result.cluster, label=label, summary=text,
                                               partition_method=pipe["partition_method"], command=command), EXECUTABLE)
        files["hostfile.example"] = (hostfile_example(c, result.cluster), REGULAR)
        if c.tp > 1 and result.model.spec is not None:  # tensor-parallel layers: Megatron-DeepSpeed's GPTModelPipe
            files["megatron_deepspeed_args.txt"] = (megatron_deepspeed_text(result, pipe["partition_method"],
                                                                            files["ds_config.json"][0]), REGULAR)
    else:
        vocab = result.model.spec.vocab_size if result.model.spec else 50257
        files["launch.sh"] = (megatron_launch(c, result.cluster, label=label, summary=text, vocab_size=vocab,
                                              command=command), EXECUTABLE)
    files["megatron_args.txt"] = (megatron_text(result), REGULAR)
    names = sorted([*files, "plan.json", "ranking.csv", "HOW_TO_RUN.md"])
    files["HOW_TO_RUN.md"] = (how_to_run(result, pipeline=pipe, summary=text, command=command), REGULAR)
    files["plan.json"] = (dumps(plan_json(result, command=command, files=names)), REGULAR)
    return files


def ranking_csv(result: PlanResult) -> str:
    return result.ranking.to_csv(index=False, float_format="%.10g")
