"""SearchSpace: every valid ParallelConfig for a model, a GPU count and a global batch, with user fixes.

A configuration is a *layout* (tp x pp x dp = GPUs) plus the per-layout choices: micro-batch size,
ZeRO stage, recompute, schedule (and virtual stages), partition method and sequence parallelism.
Validity rules and where they come from (the rules and their wording: ``pptune.target_checks``, its ``planned`` ones):

- tp inside one node and dividing the attention heads and the KV heads (Megatron's column/row split).
- pp at most the number of transformer blocks (no stage without a block).
- dp divides the global batch, and the micro-batch size divides global / dp (DeepSpeed's batch rule:
  ``train_batch_size = micro * gradient_accumulation_steps * dp``, deepspeed/runtime/config.py).
- DeepSpeed's pipeline engine: ZeRO < 2 (runtime/pipe/engine.py asserts it) and 1F1B only (TrainSchedule).
  With pp == 1 ZeRO 2/3 are allowed (a plain DeepSpeed engine, not the pipeline engine).
- Megatron: ZeRO 0/1 (1 = ``--use-distributed-optimizer``); interleaved 1F1B needs pp > 2 and the micro-batches
  a multiple of pp (REFERENCE.md §3); its even split (``type:<block class>``, which is Megatron's default) needs
  blocks divisible by pp (and by pp x vpp when interleaved), other splits are ``balanced``: stages and interleaved
  chunks of unequal size, emitted as first/last stage sizes or ``--pipeline-model-parallel-layout`` (every chunk
  holds a block); sequence parallelism only with tp > 1.

Layouts and the user's pins live in pptune/planner/layouts.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

from pptune.errors import ConfigError
from pptune.parallel import RECOMPUTE_NAMED, ParallelConfig
from pptune.planner.layouts import Fixed, Layout, context_parallel_sizes, layouts_for
from pptune.target_checks import (
    context_parallel_seq_rule,
    context_parallel_target_rule,
    even_split_rule,
    interleaving_blocks_rule,
    interleaving_pp_rule,
    microbatches_rule,
    overlap_defaults,
    overlap_rule,
    pipeline_schedule_rule,
    planned_schedule_rule,
    recompute_rule,
    sequence_parallel_target_rule,
    sequence_parallel_tp_rule,
    vpp_rule,
    zero_rule,
)
from pptune.targets import TargetRules, rules_for, target_rule

__all__ = ["Fixed", "Layout", "SearchSpace", "build_space", "even_partition"]

DEFAULT_BLOCK_KIND = "TransformerBlockPipe"  # pptune's block class (pptune.model.blocks, profile kind)


def even_partition(block_kind: str) -> str:
    """DeepSpeed's ``type:`` method over the block class: blocks split evenly, embedding on the first stage and
    head on the last (embedding and head weigh 0), which is also Megatron-LM's own default split."""
    return f"type:{block_kind}"


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchSpace:
    """The candidate lists of one planning problem; ``configs()`` enumerates its valid points."""

    gpus: int
    global_batch_size: int
    num_blocks: int
    target: str  # "deepspeed" or "megatron"
    dtype: str
    layouts: tuple[Layout, ...]
    micro_batch_sizes: tuple[int, ...]
    zero_stages: tuple[int, ...]
    recomputes: tuple[str, ...]
    schedules: tuple[str, ...]
    vpps: tuple[int, ...]  # virtual stages tried with interleaved_1f1b (all >= 2)
    partitions: tuple[str, ...]
    sequence_parallel: tuple[bool, ...]
    # Megatron's --overlap-grad-reduce / --overlap-param-gather given on the command line (None: the target's
    # default, ParallelConfig's); the param-gather knob applies to the distributed-optimizer (ZeRO >= 1) points.
    overlap_grad_reduce: bool | None = None
    overlap_param_gather: bool | None = None
    context_parallel: tuple[int, ...] = (1,)  # cp sizes of the layouts (pptune.planner.layouts)

    # --- per-layout valid choices -------------------------------------------------------------
    def micro_batch_sizes_for(self, layout: Layout) -> tuple[int, ...]:
        per_replica = self.global_batch_size // layout.dp
        return tuple(m for m in self.micro_batch_sizes if per_replica % m == 0)

    def rules(self, layout: Layout) -> TargetRules:
        return rules_for(self.target, layout.pp)

    def zero_stages_for(self, layout: Layout) -> tuple[int, ...]:
        rules = self.rules(layout)
        return tuple(z for z in self.zero_stages if zero_rule(rules, z, layout.pp, planned=True) is None)

    def partitions_for(self, layout: Layout) -> tuple[str, ...]:
        if layout.pp == 1:
            return self.partitions[:1]  # one stage: every method gives the same split
        # Megatron's even split needs blocks divisible by pp; other splits take first/last sizes or a layout
        rules = self.rules(layout)
        return tuple(p for p in self.partitions if even_split_rule(rules, p, layout.pp, self.num_blocks) is None)

    def schedules_for(self, layout: Layout, num_microbatches: int) -> tuple[tuple[str, int], ...]:
        """(schedule, vpp) pairs valid for this layout and micro-batch count."""
        if layout.pp == 1:
            return (("1f1b", 1),)
        pp, rules = layout.pp, self.rules(layout)
        out: list[tuple[str, int]] = []
        for schedule in self.schedules:
            if schedule != "interleaved_1f1b":
                out.append((schedule, 1))
                continue
            if interleaving_pp_rule(schedule, pp, rules.interleaved_min_pp) or microbatches_rule(schedule, pp, num_microbatches):
                continue
            splits = self.partitions_for(layout)
            out.extend((schedule, v) for v in self.vpps if any(self.chunks_ok(schedule, pp, v, p) for p in splits))
        return tuple(out)

    def chunks_ok(self, schedule: str, pp: int, vpp: int, partition: str) -> bool:
        """Whether ``partition`` can cut pp x vpp chunks (uneven chunks only with a non-even split)."""
        return interleaving_blocks_rule(schedule, pp, vpp, self.num_blocks, partition) is None

    def sequence_parallel_for(self, layout: Layout) -> tuple[bool, ...]:
        return tuple(sp for sp in self.sequence_parallel if sequence_parallel_tp_rule(sp, layout.tp) is None) or (False,)

    # --- enumeration --------------------------------------------------------------------------
    def configs_for(self, layout: Layout) -> Iterator[ParallelConfig]:
        """Every valid configuration of one layout, in a fixed order."""
        for mbs in self.micro_batch_sizes_for(layout):
            m = self.global_batch_size // (mbs * layout.dp)
            for schedule, vpp in self.schedules_for(layout, m):
                for zero in self.zero_stages_for(layout):
                    for recompute in self.recomputes:
                        for partition in self.partitions_for(layout):
                            if not self.chunks_ok(schedule, layout.pp, vpp, partition):
                                continue
                            for sp in self.sequence_parallel_for(layout):
                                yield self.make(layout, mbs=mbs, schedule=schedule, vpp=vpp, zero=zero,
                                                recompute=recompute, partition=partition, sp=sp)

    def configs(self) -> Iterator[ParallelConfig]:
        """Every valid configuration of the space (the exhaustive search's input)."""
        for layout in self.layouts:
            yield from self.configs_for(layout)

    def size(self) -> int:
        return sum(1 for _ in self.configs())

    def make(self, layout: Layout, *, mbs: int, schedule: str, vpp: int, zero: int, recompute: str,
             partition: str, sp: bool) -> ParallelConfig:
        return ParallelConfig(
            tp=layout.tp, pp=layout.pp, dp=layout.dp, cp=layout.cp, micro_batch_size=mbs,
            num_microbatches=self.global_batch_size // (mbs * layout.dp), schedule=schedule, vpp=vpp,  # type: ignore[arg-type]
            zero_stage=zero, recompute=recompute, dtype=self.dtype, partition=partition,  # type: ignore[arg-type]
            sequence_parallel=sp, target=self.target,  # type: ignore[arg-type]
            overlap_grad_reduce=self.overlap_grad_reduce,
            overlap_param_gather=self.overlap_param_gather if zero >= 1 else None,
        )

    def layout(self, key: str) -> Layout:
        for layout in self.layouts:
            if layout.key == key:
                return layout
        raise KeyError(key)

    def to_dict(self) -> dict:
        return {
            "gpus": self.gpus, "global_batch_size": self.global_batch_size, "num_blocks": self.num_blocks,
            "target": self.target, "dtype": self.dtype, "layouts": [lay.key for lay in self.layouts],
            "micro_batch_sizes": list(self.micro_batch_sizes), "zero_stages": list(self.zero_stages),
            "recomputes": list(self.recomputes), "schedules": list(self.schedules), "vpps": list(self.vpps),
            "partitions": list(self.partitions), "sequence_parallel": list(self.sequence_parallel),
            **{k: v for k, v in (("overlap_grad_reduce", self.overlap_grad_reduce),  # set only: old digests hold
                                 ("overlap_param_gather", self.overlap_param_gather)) if v is not None},
            **({"context_parallel": list(self.context_parallel)} if self.context_parallel != (1,) else {}),
        }

    def digest(self) -> str:
        """A short hash of the candidate lists: a resumed study must search the same space."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]


def _powers_of_two(cap: int) -> tuple[int, ...]:
    out, m = [], 1
    while m <= cap:
        out.append(m)
        m *= 2
    return tuple(out)


def build_space(
    *,
    num_blocks: int,
    gpus: int,
    gpus_per_node: int,
    global_batch_size: int,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    allowed_tp: tuple[int, ...] | None = None,
    target: str = "deepspeed",
    dtype: str = "bf16",
    fixed: Fixed | None = None,
    max_micro_batch_size: int = 16,
    zero_bubble: bool = False,
    block_kind: str = DEFAULT_BLOCK_KIND,
    model_name: str = "the model",
    cluster_name: str = "the cluster",
    overlap_grad_reduce: bool | None = None,
    overlap_param_gather: bool | None = None,
    tp_across_nodes: bool = False,
    seq_len: int | None = None,
) -> SearchSpace:
    """Build the space of one planning problem, or raise ConfigError saying why it is empty.

    Args:
        num_blocks: transformer blocks of the model (pp may not exceed it).
        gpus: total GPUs; every layout satisfies tp * pp * dp == gpus.
        gpus_per_node: tp stays inside a node unless ``tp_across_nodes`` or pinned.
        global_batch_size: samples per optimizer step.
        num_heads / num_kv_heads: tp must divide them (None: unknown, tp not checked against heads).
        allowed_tp: restricts tp (a measured profile without a spec can only run at its own tp).
        target: ``deepspeed`` or ``megatron``.
        dtype: fixed precision of every configuration.
        fixed: user-pinned dimensions.
        max_micro_batch_size: micro-batch sizes tried are the powers of two up to this.
        zero_bubble: also try ``zb_h1`` (Megatron target only; a what-if, mainline Megatron lacks it).
        block_kind: the profile's block class name; ``type:<it>`` is the even split (DeepSpeed's ``type:``
            method, Megatron's default). For the Megatron target ``--partition uniform`` means this split.
        model_name / cluster_name: how the messages of an empty space name the model and the cluster.
        overlap_grad_reduce / overlap_param_gather: Megatron's overlap flags for every point (None: the target's).
        tp_across_nodes: also tp groups spanning whole nodes (``layouts.layouts_for``).
        seq_len: the model's sequence length: long ones (Megatron) are also tried with context parallelism
            (``layouts.context_parallel_sizes``; ``fixed.cp`` pins it).
    """
    fixed = fixed or Fixed()
    _raise(target_rule(target))
    if overlap_grad_reduce is not None or overlap_param_gather is not None:  # as a ZeRO-1 point would take them
        grad = overlap_defaults(target, 2, 1, overlap_grad_reduce)[0] if overlap_grad_reduce is None else overlap_grad_reduce
        param = overlap_defaults(target, 2, 1, grad)[1] if overlap_param_gather is None else overlap_param_gather
        _raise(overlap_rule(rules_for(target, 2), grad, param, 1))
    for name in ("gpus", "global_batch_size", "num_blocks", "max_micro_batch_size"):
        if locals()[name] < 1:
            raise ConfigError(f"{name.replace('_', ' ')} must be positive, got {locals()[name]}")
    plain, pipe = rules_for(target, 1), rules_for(target, 2)  # (DeepSpeed: its plain and its pipeline engine)
    mbs = (fixed.micro_batch_size,) if fixed.micro_batch_size else _powers_of_two(max_micro_batch_size)
    zeros = (fixed.zero_stage,) if fixed.zero_stage is not None else tuple(range(plain.planned_max_zero_stage + 1))
    _raise(zero_rule(plain, zeros[0], None, planned=True))
    recomputes = (fixed.recompute,) if fixed.recompute else tuple(
        r for r in RECOMPUTE_NAMED if recompute_rule(plain, r) is None)
    _raise(recompute_rule(plain, recomputes[0]))
    schedules = _schedules(fixed, pipe, zero_bubble)
    vpps = (fixed.vpp,) if fixed.vpp and fixed.vpp > 1 else (2, 3, 4, 6, 8)
    even = even_partition(block_kind)
    methods = tuple(even if m == "type:" else m for m in pipe.partition_methods)
    if fixed.partition:
        partitions: tuple[str, ...] = (fixed.partition,)
        if "uniform" not in methods:  # Megatron: --partition uniform means its even split
            partitions = (even,) if fixed.partition == "uniform" else partitions
            if not (partitions[0] in methods or partitions[0].startswith("type:")):
                raise ConfigError("the Megatron target splits layers uniform (even blocks) or balanced "
                                  f"(by time, as first/last stage sizes or a layout), got {fixed.partition!r}")
    else:
        partitions = methods
    if fixed.sequence_parallel is not None:
        sps: tuple[bool, ...] = (fixed.sequence_parallel,)
        _raise(sequence_parallel_target_rule(pipe, fixed.sequence_parallel))
    else:
        sps = (False, True) if pipe.sequence_parallel else (False,)
    if fixed.cp is not None:
        if fixed.cp < 1:
            raise ConfigError(f"cp must be a positive integer, got {fixed.cp}")
        _raise(context_parallel_target_rule(fixed.cp, target) or context_parallel_seq_rule(fixed.cp, seq_len, model_name))
    cps = context_parallel_sizes(seq_len=seq_len, target=target, fixed_cp=fixed.cp)
    layouts = layouts_for(gpus=gpus, gpus_per_node=gpus_per_node, global_batch_size=global_batch_size,
                       num_blocks=num_blocks, num_heads=num_heads, num_kv_heads=num_kv_heads,
                       allowed_tp=allowed_tp, fixed=fixed, model_name=model_name, cluster_name=cluster_name, cps=cps,
                       tp_across_nodes=tp_across_nodes)
    space = SearchSpace(
        gpus=gpus, global_batch_size=global_batch_size, num_blocks=num_blocks, target=target, dtype=dtype,
        layouts=layouts, micro_batch_sizes=mbs, zero_stages=zeros, recomputes=recomputes, schedules=schedules,
        vpps=vpps, partitions=partitions, sequence_parallel=sps, overlap_grad_reduce=overlap_grad_reduce,
        overlap_param_gather=overlap_param_gather, context_parallel=cps,
    )
    usable = tuple(lay for lay in layouts if next(space.configs_for(lay), None) is not None)
    if not usable:
        raise ConfigError(
            f"no configuration of {gpus} GPUs fits the fixed choices: layouts {[lay.key for lay in layouts]}, "
            f"micro-batch sizes {list(mbs)} (must divide global batch {global_batch_size} / dp), "
            f"schedules {list(schedules)}, zero {list(zeros)}, partitions {list(partitions)}"
        )
    return _replace_layouts(space, usable)


def _replace_layouts(space: SearchSpace, layouts: tuple[Layout, ...]) -> SearchSpace:
    return dataclasses.replace(space, layouts=layouts)


def _raise(message: str | None) -> None:
    if message:
        raise ConfigError(message)


def _schedules(fixed: Fixed, pipe: TargetRules, zero_bubble: bool) -> tuple[str, ...]:
    """The schedules tried with pp > 1 (``pipe``: the target's pipeline rules)."""
    if fixed.vpp and fixed.vpp > 1 and fixed.schedule is not None:
        _raise(vpp_rule(fixed.schedule, fixed.vpp))
    if fixed.schedule:
        _raise(pipeline_schedule_rule(pipe, fixed.schedule, 2) or planned_schedule_rule(pipe, fixed.schedule, 2))
        return (fixed.schedule,)
    if fixed.vpp and fixed.vpp > 1 and "interleaved_1f1b" in pipe.planned_schedules:
        return ("interleaved_1f1b",)
    return pipe.planned_schedules + (pipe.what_if_schedules if zero_bubble else ())
