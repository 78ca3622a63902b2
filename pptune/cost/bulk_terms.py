"""Per-stage terms of one stage split for ``estimate_many``: data-parallel tail, optimizer step, model states.

They depend on the layer table's parameters (the same for every table of one tp), the split, ZeRO, target, dtype
and the layout, not on the micro-batch size, recompute or schedule, so ``estimate_many`` computes them once per
such key and keeps them across calls (``_TERMS``). The arithmetic is ``estimate``'s: ``dp_sync.stage_sync`` for
the tail, ``estimate._optimizer_ms`` and ``memory.stage_memory``'s model-state bytes.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from pptune.cost.dp_sync import StageSync, stage_sync
from pptune.cost.estimate import _optimizer_ms, _stage_params
from pptune.cost.layers import LayerTable
from pptune.cost.memory import bytes_per_param, optimizer_partitioned
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig


class StageTerms(SimpleNamespace):
    times: np.ndarray  # (2, pp): tied all-reduce after the last op ("extra"), DP gradient sync
    states: np.ndarray  # (pp,) int model-state bytes
    sync: StageSync  # for the per-micro-batch ZeRO-2/3 traffic
    optimizer_ms: float


_TERMS: dict[tuple, StageTerms] = {}


def stage_terms(table: LayerTable, bounds: tuple[int, ...], config: ParallelConfig, cluster: Cluster) -> StageTerms:
    """Per stage: tied all-reduce and DP sync after the last op (estimate._dp_tail), optimizer step, model states."""
    key = (table.param_count, table.tied_param_count, table.head_index, table.embedding_index, bounds,
           config.zero_stage, config.target, config.dtype, config.dp, config.tp, id(cluster))
    hit = _TERMS.get(key)
    if hit is not None and hit.cluster is cluster:
        return hit
    pp, dp = config.pp, config.dp
    params = [_stage_params(table, bounds, pp, s) for s in range(pp)]
    w_b, g_b, o_b = bytes_per_param(config)
    sync = stage_sync(table, bounds, config, cluster, params)
    states = [round(p * w_b / (dp if config.zero_stage >= 3 else 1)) + round(p * g_b / (dp if config.zero_stage >= 2 else 1))
              + round(p * o_b / (dp if optimizer_partitioned(config) else 1)) for p in params]
    terms = StageTerms(times=np.array([sync.tied_ms, sync.sync_ms]), states=np.array(states, dtype=np.int64),
                       sync=sync, optimizer_ms=max(_optimizer_ms(n, config, cluster) for n in params), cluster=cluster)
    if len(_TERMS) > 65536:
        _TERMS.clear()
    _TERMS[key] = terms
    return terms
