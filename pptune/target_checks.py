"""The one check of a configuration against its target's rules: one function per rule, one wording each.

The rules' table (what each framework runs) is ``pptune.targets``; this module turns it into
:class:`Violation` records. Rule kinds, in the order :func:`violations` reports them (the order the checks fired
before the table):
- config: ParallelConfig refuses these on construction (``check(config, step=False)``);
- model (a Profile or a TransformerSpec given), cluster (a Cluster given) and step (micro-batch grouping)
  rules: what ``pptune.cost.checks.check_config`` refuses before estimating;
- plan (``planned=True``): what pptune searches and emits, narrower than what the cost model accepts as a
  what-if (Megatron with ZeRO 2/3 or GPipe is estimated but never planned).
Pure Python: no torch or numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pptune.errors import ConfigError
from pptune.targets import (
    RECOMPUTE_MODES,
    RECOMPUTE_OWNER,
    TARGETS,
    TargetRules,
    either,
    rules_for,
    target_rule,
)


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: its id (``RULES``) and its one-line message, with the numbers."""

    rule: str
    message: str


# Rule ids in reporting order (kind in brackets).
RULES: tuple[str, ...] = (
    "vpp-needs-interleaving",  # config
    "interleaving-pp",  # config (pp >= 2); planned: the target's interleaved_min_pp
    "target",  # config
    "zero-stage",  # config (with pp > 1); planned: planned_max_zero_stage
    "pipeline-schedule",  # config (pp > 1)
    "planned-schedule",  # plan (pp > 1)
    "recompute-mode",  # config
    "sequence-parallel-tp",  # config
    "context-parallel-target",  # config: cp > 1 is Megatron's
    "overlap-knobs",  # config: overlap_grad_reduce / overlap_param_gather against the target
    "sequence-parallel-target",  # plan
    "chunks-layers",  # model
    "heads-tp",  # model
    "kv-heads-tp",  # model
    "context-parallel-seq",  # model: the sequence splits into 2 x cp chunks
    "stage-blocks",  # plan, model
    "even-split-blocks",  # plan, model
    "interleaving-blocks",  # plan, model
    "tp-node",  # cluster
    "world-size",  # cluster
    "interleaving-microbatches",  # step
)


# --- the rules, one function each: the message when broken, else None --------------------------------
def vpp_rule(schedule: str, vpp: int) -> str | None:
    if vpp > 1 and schedule != "interleaved_1f1b":
        return f"vpp {vpp} > 1 needs schedule interleaved_1f1b, got {schedule}"
    return None


def interleaving_pp_rule(schedule: str, pp: int, min_pp: int = 2) -> str | None:
    if schedule == "interleaved_1f1b" and pp < min_pp:
        return f"interleaved_1f1b needs pp >= {min_pp}, got pp {pp}"
    return None


def zero_rule(rules: TargetRules, zero_stage: int, pp: int | None, *, planned: bool = False) -> str | None:
    """ZeRO beyond the target's limit (config: only the pipeline limit with pp > 1; planned: what pptune plans).
    ``pp`` None: a pinned stage checked before any layout (the message then names no pp)."""
    if planned:
        limit = rules.planned_max_zero_stage
    else:
        limit = rules.max_zero_stage_with_pp if pp is not None and pp > 1 else 3
    if zero_stage <= limit:
        return None
    allowed = either(tuple(str(z) for z in range(limit + 1)))
    where = f" with pp {pp}" if pp is not None else ""
    return f"ZeRO stage {zero_stage}{where}: {rules.engine} allows only ZeRO {allowed}"


def pipeline_schedule_rule(rules: TargetRules, schedule: str, pp: int) -> str | None:
    if pp > 1 and schedule not in rules.pipeline_schedules:
        return f"{rules.engine} runs {either(rules.pipeline_schedules)} only, got schedule {schedule}"
    return None


def planned_schedule_rule(rules: TargetRules, schedule: str, pp: int) -> str | None:
    """A schedule the cost model accepts but pptune does not plan (``pipeline_schedule_rule`` reports the rest)."""
    plannable = rules.planned_schedules + rules.what_if_schedules
    if pp > 1 and schedule in rules.pipeline_schedules and schedule not in plannable:
        return f"{rules.engine} does not train with {schedule}; choose {either(plannable)}"
    return None


def recompute_rule(rules: TargetRules, recompute: str) -> str | None:
    mode = "every" if recompute.startswith("every:") else recompute
    if mode in RECOMPUTE_MODES and mode not in rules.recompute_modes:  # unknown strings: ParallelConfig's own check
        modes = either(tuple(m if m != "every" else "every:K" for m in rules.recompute_modes))
        return (f"{mode} recompute is a {RECOMPUTE_OWNER.get(mode, 'other')} feature; {rules.engine} "
                f"checkpoints whole layers (recompute {modes})")
    return None


def sequence_parallel_tp_rule(sequence_parallel: bool, tp: int) -> str | None:
    if sequence_parallel and tp == 1:
        return "sequence parallelism needs tp > 1"
    return None


def overlap_defaults(target: str, pp: int, zero_stage: int, grad_reduce: bool | None) -> tuple[bool, bool]:
    """The target's (overlap_grad_reduce, overlap_param_gather) when a config leaves them None.

    Megatron (what pptune emits): ``--overlap-grad-reduce``, and ``--overlap-param-gather`` with the distributed
    optimizer (ZeRO >= 1) when the gradient reduction overlaps (``grad_reduce``; None: the target's). DeepSpeed: neither.
    """
    default = rules_for(target, pp).overlap_grad_reduce
    grad = default if grad_reduce is None else grad_reduce
    return default, bool(default and grad is True and zero_stage >= 1)


def overlap_rule(rules: TargetRules, grad_reduce: object, param_gather: object, zero_stage: int) -> str | None:
    """The overlap knobs against the target and Megatron-LM's own rule (megatron/training/arguments.py
    ``validate_args``: ``--overlap-param-gather`` needs ``--use-distributed-optimizer`` and ``--overlap-grad-reduce``)."""
    for name, value in (("overlap_grad_reduce", grad_reduce), ("overlap_param_gather", param_gather)):
        if not isinstance(value, bool):
            return f"{name} must be true or false, got {value!r}"
        if value and not rules.overlap_grad_reduce:
            return f"{rules.engine} reduces gradients after the backward: {name} needs --target megatron"
    if param_gather and zero_stage == 0:
        return "--overlap-param-gather needs the distributed optimizer (ZeRO 1)"
    if param_gather and not grad_reduce:
        return "--overlap-param-gather needs --overlap-grad-reduce"
    return None


def sequence_parallel_target_rule(rules: TargetRules, sequence_parallel: bool) -> str | None:
    if sequence_parallel and not rules.sequence_parallel:
        return "sequence parallelism is a Megatron feature; use --target megatron"
    return None


def chunks_rule(pp: int, vpp: int, num_layers: int, model: str) -> str | None:
    chunks = pp * vpp
    if chunks > num_layers:
        what = f"pp {pp}" if vpp == 1 else f"pp {pp} x vpp {vpp} = {chunks} chunks"
        return f"{what} > {num_layers} pipeline layers of {model}: every chunk needs a layer"
    return None


def heads_rule(heads: int | None, tp: int, model: str, *, kv: bool = False) -> str | None:
    if heads and heads % tp:
        return f"{heads} {'key/value' if kv else 'attention'} heads of {model} are not divisible by tp {tp}"
    return None


def stage_blocks_rule(pp: int, num_blocks: int, model: str) -> str | None:
    """Planned stages each hold a transformer block (the cost model also accepts embedding- or head-only stages)."""
    if pp > num_blocks:
        return f"pp {pp} > {num_blocks} transformer blocks of {model}: every stage needs a block"
    return None


def even_split_rule(rules: TargetRules, partition: str, pp: int, num_blocks: int) -> str | None:
    if rules.even_split_needs_divisible_blocks and pp > 1 and partition.startswith("type:") and num_blocks % pp:
        return (f"{rules.engine}'s even split needs the {num_blocks} transformer blocks divisible by pp {pp} "
                "(use balanced)")
    return None


def interleaving_blocks_rule(schedule: str, pp: int, vpp: int, num_blocks: int, partition: str = "type:") -> str | None:
    """Planned interleaving: each of the pp x vpp chunks holds a block; the even split (``type:``) needs the blocks
    divisible by the chunks, other splits are uneven chunks (Megatron's ``--pipeline-model-parallel-layout``)."""
    if schedule != "interleaved_1f1b":
        return None
    if partition.startswith("type:") and num_blocks % (pp * vpp):
        return f"interleaved_1f1b needs the {num_blocks} transformer blocks divisible by pp {pp} x vpp {vpp} (use balanced)"
    if pp * vpp > num_blocks:
        return f"interleaved_1f1b with pp {pp} x vpp {vpp} = {pp * vpp} chunks > {num_blocks} transformer blocks: every chunk needs a block"
    return None


def tp_node_rule(tp: int, gpus_per_node: int, cluster: str, *, across_nodes: bool = True) -> str | None:
    """A tp group larger than a node spans whole nodes (its ring runs at the inter-node rate, ``cost.comm``);
    ``across_nodes=False`` is the search's default, which leaves such groups out unless asked for."""
    if tp <= gpus_per_node:
        return None
    if tp % gpus_per_node:
        return (f"tp {tp} > {gpus_per_node} GPUs per node of {cluster}: a tensor-parallel group across nodes "
                f"must fill whole nodes (tp a multiple of {gpus_per_node})")
    if not across_nodes:
        return (f"tp {tp} > {gpus_per_node} GPUs per node of {cluster}: tensor parallelism across nodes is "
                f"searched only on request (--tp-across-nodes, or --tp {tp})")
    return None


def context_parallel_target_rule(cp: int, target: str) -> str | None:
    if cp > 1 and target != "megatron":
        return f"context parallelism (cp {cp}) is a Megatron feature; use --target megatron"
    return None


def context_parallel_seq_rule(cp: int, seq_len: int | None, model: str) -> str | None:
    """Megatron's validate_args: seq length a multiple of 2 x cp (each rank takes two chunks for causal load
    balance; megatron/training/arguments.py, NVIDIA/Megatron-LM d98e8a6)."""
    if cp > 1 and seq_len and seq_len % (2 * cp):
        return f"sequence length {seq_len} of {model} is not a multiple of 2 x cp {cp} (Megatron's context split)"
    return None


def world_size_rule(tp: int, pp: int, dp: int, cluster: Any, cp: int = 1) -> str | None:
    world = tp * cp * pp * dp
    if cluster.num_nodes >= 1 and world != cluster.num_gpus:
        tp_cp = f"{tp} x cp {cp}" if cp > 1 else f"{tp}"
        return (f"tp {tp_cp} x pp {pp} x dp {dp} = {world} GPUs but cluster "
                f"{cluster.name} has {cluster.num_gpus} ({cluster.num_nodes} x {cluster.gpus_per_node})")
    return None


def microbatches_rule(schedule: str, pp: int, num_microbatches: int) -> str | None:
    if schedule == "interleaved_1f1b" and num_microbatches % pp:
        return (f"interleaved_1f1b needs micro-batches per step {num_microbatches} "
                f"to be a multiple of pp {pp} (Megatron's default group size)")
    return None


def schedule_violations(schedule: str, *, pp: int, vpp: int, num_microbatches: int) -> tuple[Violation, ...]:
    """The shape rules the schedule simulator checks (it knows no target): vpp and micro-batch grouping."""
    found = (("interleaving-microbatches", microbatches_rule(schedule, pp, num_microbatches)),
             ("vpp-needs-interleaving", vpp_rule(schedule, vpp)))
    return tuple(Violation(rule, msg) for rule, msg in found if msg)


# --- the one check ---------------------------------------------------------------------------------------
def _model_facts(model: Any) -> tuple[str, int, int, int | None, int | None]:
    """(name, pipeline layers, transformer blocks, heads, kv heads) of a Profile or a TransformerSpec."""
    if hasattr(model, "layers"):  # pptune.profile.schema.Profile
        spec = model.spec or {}
        blocks = sum(1 for layer in model.layers if layer.role == "block")
        return model.model, model.num_layers, blocks, spec.get("num_heads"), spec.get("num_kv_heads")
    # pptune.model.spec.TransformerSpec: embedding + blocks + head, as the profiles lay them out
    return model.name, model.num_layers + 2, model.num_layers, model.num_heads, model.num_kv_heads


def violations(config: Any, model: Any = None, cluster: Any = None, *, planned: bool = False,
               step: bool = True) -> tuple[Violation, ...]:
    """Every rule ``config`` (a ParallelConfig) breaks, in reporting order (``RULES``).

    Args:
        config: the configuration.
        model: a Profile or a TransformerSpec: adds the model rules (heads and KV heads by tp, chunks per layer;
            with ``planned`` the block splits).
        cluster: a Cluster: adds tp filling whole nodes when it spans several, and the world size.
        planned: also the rules of what pptune plans and emits (narrower than what the cost model estimates).
        step: include the micro-batch grouping rule (ParallelConfig leaves it to the cost checks).
    """
    c = config
    found: list[tuple[str, str | None]] = [
        ("vpp-needs-interleaving", vpp_rule(c.schedule, c.vpp)),
        ("interleaving-pp", interleaving_pp_rule(c.schedule, c.pp)),
        ("target", target_rule(c.target)),
    ]
    if c.target in TARGETS:
        rules = rules_for(c.target, c.pp)
        if planned:
            found.append(("interleaving-pp", interleaving_pp_rule(c.schedule, c.pp, rules.interleaved_min_pp)))
        found += [
            ("zero-stage", zero_rule(rules, c.zero_stage, c.pp)),
            ("pipeline-schedule", pipeline_schedule_rule(rules, c.schedule, c.pp)),
        ]
        if planned:
            found += [("zero-stage", zero_rule(rules, c.zero_stage, c.pp, planned=True)),
                      ("planned-schedule", planned_schedule_rule(rules, c.schedule, c.pp))]
        found.append(("recompute-mode", recompute_rule(rules, c.recompute)))
    found.append(("sequence-parallel-tp", sequence_parallel_tp_rule(c.sequence_parallel, c.tp)))
    cp = getattr(c, "cp", 1)
    found.append(("context-parallel-target", context_parallel_target_rule(cp, c.target)))
    grad, param = getattr(c, "overlap_grad_reduce", None), getattr(c, "overlap_param_gather", None)
    if c.target in TARGETS and grad is not None:  # None: not yet resolved (ParallelConfig resolves it first)
        found.append(("overlap-knobs", overlap_rule(rules, grad, param, c.zero_stage)))
    if planned and c.target in TARGETS:
        found.append(("sequence-parallel-target", sequence_parallel_target_rule(rules, c.sequence_parallel)))
    if model is not None:
        name, layers, blocks, heads, kv = _model_facts(model)
        found += [
            ("chunks-layers", chunks_rule(c.pp, c.vpp, layers, name)),
            ("heads-tp", heads_rule(heads, c.tp, name)),
            ("kv-heads-tp", heads_rule(kv, c.tp, name, kv=True)),
            ("context-parallel-seq", context_parallel_seq_rule(cp, getattr(model, "seq_len", None), name)),
        ]
        if planned and c.target in TARGETS:
            found += [("stage-blocks", stage_blocks_rule(c.pp, blocks, name)),
                      ("even-split-blocks", even_split_rule(rules, c.partition, c.pp, blocks)),
                      ("interleaving-blocks", interleaving_blocks_rule(c.schedule, c.pp, c.vpp, blocks, c.partition))]
    if cluster is not None:
        found += [("tp-node", tp_node_rule(c.tp, cluster.gpus_per_node, cluster.name)),
                  ("world-size", world_size_rule(c.tp, c.pp, c.dp, cluster, cp))]
    if step:
        found.append(("interleaving-microbatches", microbatches_rule(c.schedule, c.pp, c.num_microbatches)))
    out: list[Violation] = []
    for rule, message in found:
        if message and all(v.message != message for v in out):  # the config and planned forms may coincide
            out.append(Violation(rule, message))
    return tuple(out)


def raise_first(found: tuple[Violation, ...]) -> None:
    if found:
        raise ConfigError(found[0].message)


def check(config: Any, model: Any = None, cluster: Any = None, *, planned: bool = False, step: bool = True) -> None:
    """Raise ConfigError with the first violation's message (see ``violations``); return None when there is none."""
    raise_first(violations(config, model, cluster, planned=planned, step=step))
