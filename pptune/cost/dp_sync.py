"""The data-parallel side of a step's tail, per stage: what each stage reduces after its last op.

One function for ``estimate`` and ``estimate_many`` alike (the bulk path caches its result per stage split):
- the tied embedding's all-reduce between the first and the last stage (DeepSpeed ``ReduceTiedGrads``);
- the gradient synchronisation at the accumulation boundary (``comm.dp_grad_sync_ms``): DeepSpeed's pipeline
  engine reduces a stage's whole gradient after its schedule; Megatron with ``--overlap-grad-reduce``
  (``ParallelConfig.overlap_grad_reduce``) hides it behind the backward except the last bucket, taken as the
  stage's first layer (the last whose gradients finish), and without it reduces every gradient after the last
  backward (Megatron before 2023). With the distributed optimizer (ZeRO >= 1) the updated parameters are
  all-gathered after the step: ``--overlap-param-gather`` (``overlap_param_gather``) hides all but the first
  bucket behind the next forward, without it the whole stage's gather is exposed. DeepSpeed's BF16_Optimizer
  all-reduces and then all-gathers (``memory.bf16_optimizer``);
- ZeRO-2/3's per-micro-batch traffic (``comm.zero_microbatch_ms``), which the caller exposes against each
  stage's busy time (``comm.zero_exposed_ms``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pptune.cost import comm
from pptune.cost.layers import LayerTable
from pptune.cost.memory import bf16_optimizer, bytes_per_param
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig


@dataclass(frozen=True, kw_only=True, slots=True)
class StageSync:
    """Per-stage data-parallel terms of one configuration's stage split (index = stage)."""

    tied_ms: tuple[float, ...]  # tied-embedding all-reduce after the stage's last op (first and last stage only)
    sync_ms: tuple[float, ...]  # gradient synchronisation at the accumulation boundary
    zero_reduce_ms: tuple[float, ...]  # per micro-batch ZeRO-2/3 reduce-scatter
    zero_gather_ms: tuple[float, ...]  # per micro-batch ZeRO-3 parameter gathers


def stage_sync(table: LayerTable, bounds: tuple[int, ...], config: ParallelConfig, cluster: Cluster,
               params: list[int]) -> StageSync:
    """The terms of every stage; ``params`` holds each stage's parameters (``stage_terms.stage_params``).

    With context parallelism the gradients are reduced over dp x cp ranks, one group of stride tp in Megatron's
    tp-cp-dp-pp order (``ParallelConfig.dp_cp``), so the placement is that of a dp x cp data-parallel group."""
    pp, dp = config.pp, config.dp_cp
    grad_bytes = 4 if config.dtype == "fp32" else 2  # gradients travel in the training dtype
    weight_bytes = bytes_per_param(config)[0]
    tied = table.tied_copy_on(bounds[-2], bounds[-1]) if pp > 1 else 0
    tied_ms = 0.0
    if tied:
        tied_ms = comm.all_reduce_ms(tied * grad_bytes, 2, comm.first_last_link(cluster, tp=config.tp, dp=dp, pp=pp))
    gather = bf16_optimizer(config)
    sync, reduce, gathers = [], [], []
    for s in range(pp):
        bucket = table.param_count[bounds[s]]  # the last bucket to finish (the stage's first layer)
        n = bucket if config.overlap_grad_reduce else params[s]
        n_gather = bucket if config.overlap_param_gather else params[s]
        link = comm.dp_link(cluster, tp=config.tp, dp=dp, stage=s)
        sync.append(comm.dp_grad_sync_ms(n * grad_bytes, n_gather * weight_bytes, dp=dp, zero_stage=config.zero_stage,
                                         link=link, gather_after_all_reduce=gather))
        r, g = comm.zero_microbatch_ms(n * grad_bytes, n * weight_bytes, dp=dp, zero_stage=config.zero_stage, link=link)
        reduce.append(r)
        gathers.append(g)
    return StageSync(tied_ms=tuple(tied_ms if s in (0, pp - 1) else 0.0 for s in range(pp)), sync_ms=tuple(sync),
                     zero_reduce_ms=tuple(reduce), zero_gather_ms=tuple(gathers))
