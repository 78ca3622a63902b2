"""Per-stage terms of one stage split: parameters, data-parallel tail, optimizer step, model-state bytes.

They depend on the layer table's parameters (the same for every table of one tp), the split, ZeRO, target, dtype
and the layout, not on the micro-batch size, recompute or schedule, so ``estimate_many`` computes them once per
such key and keeps them in its CostCache.

- optimizer_ms: the Adam step of the slowest stage, memory-bound: ``OPTIMIZER_BYTES_PER_PARAM`` bytes moved per
  optimizer-owned parameter over ``hbm_gbps * memory_efficiency``. Every stage waits for it (the step's global
  gradient norm couples all stages).
- the tail after the last backward (``dp_sync.stage_sync``): each stage reduces its gradients (and the tied
  embedding between first and last stage) once its own last op ends.
- model states per stage: weights, gradients, optimizer states (``memory.bytes_per_param``), divided by dp as
  ZeRO (and DeepSpeed's BF16_Optimizer) partition them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pptune.cost.cache import CostCache
from pptune.cost.dp_sync import StageSync, stage_sync
from pptune.cost.layers import LayerTable
from pptune.cost.memory import bytes_per_param, optimizer_partitioned
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig

# Optimizer-step traffic per parameter (Megatron's mixed-precision optimizer, apex FusedAdam): unscale and
# check the fp32 gradients for inf/nan (read+write, 8), their global norm for clipping (read, 4), Adam
# (read the gradient, read+write the fp32 master weight, m and v: 28), copy the master into the 16-bit weight
# (read 4, write 2), zero the gradient buffer for the next step (write, 4). fp32 training has no loss
# scaling and no master copy: 4 + 28 + 4.
OPTIMIZER_BYTES_PER_PARAM = {"mixed": 50.0, "fp32": 36.0}


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class StageTerms:
    """The terms of every stage of one split (index = stage)."""

    params: tuple[int, ...]  # parameters per GPU of the stage (a tied head copy included)
    times: np.ndarray  # (2, pp): tied all-reduce after the last op, DP gradient sync
    states: np.ndarray  # (3, pp) int: weight, gradient and optimizer bytes
    sync: StageSync  # for the per-micro-batch ZeRO-2/3 traffic
    optimizer_ms: float


def stage_terms(table: LayerTable, bounds: tuple[int, ...], config: ParallelConfig, cluster: Cluster,
                cache: CostCache) -> StageTerms:
    """Per stage: tied all-reduce and DP sync after the last op, optimizer step, model states (kept in ``cache``)."""
    key = (table.param_count, table.tied_param_count, table.head_index, table.embedding_index, bounds,
           config.zero_stage, config.target, config.dtype, config.dp_cp, config.tp, config.overlap_grad_reduce,
           config.overlap_param_gather, cache.fingerprint(cluster))
    return cache.get("stage_terms", key, lambda: _stage_terms(table, bounds, config, cluster))


def _stage_terms(table: LayerTable, bounds: tuple[int, ...], config: ParallelConfig, cluster: Cluster) -> StageTerms:
    pp, dp = config.pp, config.dp_cp  # ZeRO shards over dp x cp (Megatron's data-parallel group with cp)
    params = [stage_params(table, bounds, pp, s) for s in range(pp)]
    w_b, g_b, o_b = bytes_per_param(config)
    sync = stage_sync(table, bounds, config, cluster, params)
    states = [[round(p * w_b / (dp if config.zero_stage >= 3 else 1)) for p in params],
              [round(p * g_b / (dp if config.zero_stage >= 2 else 1)) for p in params],
              [round(p * o_b / (dp if optimizer_partitioned(config) else 1)) for p in params]]
    return StageTerms(params=tuple(params), times=np.array([sync.tied_ms, sync.sync_ms]),
                      states=np.array(states, dtype=np.int64), sync=sync,
                      optimizer_ms=max(optimizer_ms(n, config, cluster) for n in params))


def stage_params(table: LayerTable, bounds: tuple[int, ...], pp: int, stage: int) -> int:
    """Parameters per GPU of ``stage``: its chunks' layers, plus the tied embedding copy a head stage holds."""
    total = 0
    for c in range(stage, len(bounds) - 1, pp):
        total += table.total("param_count", bounds[c], bounds[c + 1]) + table.tied_copy_on(bounds[c], bounds[c + 1])
    return total


def optimizer_ms(params: int, config: ParallelConfig, cluster: Cluster) -> float:
    """The optimizer step of a stage with ``params`` parameters per GPU (memory-bound)."""
    owned = params / config.dp_cp if optimizer_partitioned(config) else params
    per_param = OPTIMIZER_BYTES_PER_PARAM["fp32" if config.dtype == "fp32" else "mixed"]
    gpu = cluster.gpu
    return owned * per_param / (gpu.hbm_gbps * gpu.memory_efficiency * 1e6)
