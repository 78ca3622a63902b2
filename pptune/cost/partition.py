"""Partition: which profile layers each pipeline chunk holds (``pp * vpp + 1`` boundary indices).

``uniform``, ``parameters`` and ``type:<regex>`` run DeepSpeed's own split functions (re-implemented
exactly in ``pptune.cost.ds_partition``, without importing deepspeed) on the weights
``deepspeed/runtime/pipe/module.py::PipelineModule._partition_layers`` gives them, so a plan splits the model
the way the engine will. ``balanced`` is pptune's own: the contiguous split that minimises the largest
chunk time (forward + backward + recompute at the config's micro-batch size). With ``vpp > 1``
(Megatron interleaving) the layers split into ``pp * vpp`` chunks and chunk ``c`` runs on stage ``c % pp``.
"""

from __future__ import annotations

import bisect
import re
from itertools import accumulate

import numpy as np

from pptune.cost import ds_partition
from pptune.cost.cache import CostCache
from pptune.cost.chunks import backward_ms
from pptune.cost.layers import layer_table
from pptune.errors import ConfigError
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile


def stage_boundaries(profile: Profile, config: ParallelConfig, *, cache: CostCache | None = None) -> tuple[int, ...]:
    """Chunk boundaries over ``profile.layers``: chunk ``c`` holds layers ``[b[c], b[c + 1])``.

    Args:
        profile: the model's per-layer costs.
        config: supplies ``pp``, ``vpp``, ``partition`` (and micro-batch size, tp, recompute for ``balanced``).
        cache: keeps layer tables and DeepSpeed's split programmes for later calls (a fresh one when not given).

    Returns:
        ``pp * vpp + 1`` non-decreasing indices from 0 to the number of layers.

    Raises:
        ConfigError: more chunks than layers, or a ``type:`` regex that matches no layer.
    """
    parts = config.pp * config.vpp
    n = profile.num_layers
    if parts > n:
        raise ConfigError(f"pp {config.pp} x vpp {config.vpp} = {parts} chunks but the profile has only {n} layers")
    method = config.partition
    if parts == 1:
        return (0, n)
    cache = CostCache() if cache is None else cache
    if method == "uniform":
        return cache.get("ds_uniform", (n, parts), lambda: ds_partition.partition_uniform(n, parts))
    table = layer_table(profile, micro_batch_size=config.micro_batch_size, tp=config.tp, dtype=config.dtype,
                        sequence_parallel=config.sequence_parallel, cache=cache)
    if method == "parameters":
        weights = deepspeed_param_weights(table.param_count, table.head_index, table.tied_param_count)
        return _ds_balanced(cache, weights, parts)
    if method.lower().startswith("type:"):
        weights = cache.get("type_weights", (table.kinds, method), lambda: type_weights(table.kinds, method))
        return _ds_balanced(cache, weights, parts)
    if method == "balanced":
        weights = tuple(layer_work_ms(table, config))
        return cache.get("min_max_split", (weights, parts), lambda: min_max_split(weights, parts, cache=cache))
    raise ConfigError(f"unknown partition method {method!r}")


def deepspeed_param_weights(param_count: tuple[int, ...], head_index: int | None, tied: int) -> tuple[int, ...]:
    """Per-layer weights of DeepSpeed's ``parameters`` method (``PipelineModule._count_layer_params``).

    DeepSpeed builds every LayerSpec, TiedLayerSpec included, and counts all its trainable parameters,
    so a tied head counts the embedding's weights again, although the profile counts them once.
    """
    if not tied or head_index is None:
        return param_count
    weights = list(param_count)
    weights[head_index] += tied
    return tuple(weights)


def type_weights(kinds: tuple[str, ...], method: str) -> tuple[int, ...]:
    """1 for layers whose class name matches, else 0 (``PipelineModule._find_layer_type``).

    DeepSpeed lower-cases the whole method string and keeps the text between the first and second
    colon, then searches each class name with IGNORECASE; we do the same.
    """
    pattern = method.lower().split(":")[1]
    regex = re.compile(pattern, re.IGNORECASE)
    weights = tuple(1 if regex.search(kind) else 0 for kind in kinds)
    if not any(weights):
        raise ConfigError(f"partition {method!r} matches no layer class (classes: {', '.join(sorted(set(kinds)))})")
    return weights


def layer_work_ms(table, config: ParallelConfig) -> list[float]:
    """Forward + backward (recompute included, ``chunks.backward_ms``) per layer: the weight ``balanced`` evens out."""
    fwd = np.array(table.fwd_ms)
    bwd = backward_ms(fwd, np.array(table.bwd_ms), np.array(table.attn_fwd_ms), np.array(config.recompute_interval),
                      np.array(config.recompute == "selective"))
    return (fwd + bwd).tolist()


def _ds_balanced(cache: CostCache, weights: tuple[int, ...], num_parts: int) -> tuple[int, ...]:
    # Parameter weights do not depend on the micro-batch size: one split per (tp, parts) serves them all, and
    # one DeepSpeed programme per weight vector serves every part count (ds_partition.balanced_cuts).
    def build() -> tuple[int, ...]:
        if len(weights) <= num_parts:
            return ds_partition.partition_uniform(len(weights), num_parts)
        cuts = cache.get("ds_cuts", weights, lambda: ds_partition.balanced_cuts(weights, len(weights) - 1))
        return ds_partition.balanced_bounds(cuts, num_parts)

    return cache.get("ds_balanced", (weights, num_parts), build)


def min_max_split(weights: tuple[float, ...], num_parts: int, *, cache: CostCache | None = None) -> tuple[int, ...]:
    """The contiguous split into ``num_parts`` non-empty parts with the smallest largest part.

    The optimal bottleneck is the sum of some contiguous run of layers, so we binary-search the sorted sums
    of all runs (n(n+1)/2 of them, at least the largest layer) with a greedy feasibility test (pack each
    part up to T), which is exact for the linear partition bottleneck problem: about log2(n^2) probes.
    """
    n = len(weights)
    if num_parts > n:
        raise ConfigError(f"cannot split {n} layers into {num_parts} non-empty chunks")
    prefix, runs = (CostCache() if cache is None else cache).get("run_sums", weights, lambda: _run_sums(weights))
    # The optimum lies in [max(largest layer, mean part), mean part + largest layer]: packing every part up to
    # that upper cap overfills none and leaves less than a mean part for the last one.
    low = max(max(weights), prefix[-1] / num_parts)
    high = prefix[-1] / num_parts + max(weights)
    inside = runs[np.searchsorted(runs, low, side="left"):np.searchsorted(runs, high * (1 + 1e-12), side="right")]
    candidates = inside.tolist() + [prefix[-1]]  # the whole model always fits in one part
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _greedy(prefix, num_parts, candidates[mid]) is None:
            lo = mid + 1
        else:
            hi = mid
    best = _greedy(prefix, num_parts, candidates[hi])
    assert best is not None
    return best


def _run_sums(weights: tuple[float, ...]) -> tuple[list[float], np.ndarray]:
    """The prefix sums of ``weights`` and the sorted distinct sums of all contiguous runs (the same subtraction
    _greedy makes), once per weight vector: every part count of a pipeline searches the same sums."""
    prefix = [0.0, *accumulate(weights)]
    p = np.array(prefix)
    first, last = np.triu_indices(len(prefix), 1)
    return prefix, np.unique(p[last] - p[first])


# Above this many parts one vectorised search per probe beats a bisect per part.
_VECTOR_PARTS = 12


def _greedy(prefix: list[float], parts: int, cap: float) -> tuple[int, ...] | None:
    """Left-to-right packing with every part <= cap, leaving one layer for each later part; None if impossible."""
    n = len(prefix) - 1
    bounds = [0]
    start = 0
    furthest = None
    if parts > _VECTOR_PARTS:  # every start's furthest stop in one search (the same sums bisect compares)
        p = np.array(prefix)
        furthest = (np.searchsorted(p, p + cap * (1 + 1e-12), side="right") - 1).tolist()
    for k in range(parts):
        left = parts - k - 1
        if k == parts - 1:
            stop = n
        else:
            # Furthest stop with prefix[stop] - prefix[start] <= cap (small slack for float sums).
            if furthest is None:
                stop = bisect.bisect_right(prefix, prefix[start] + cap * (1 + 1e-12), start + 1) - 1
            else:
                stop = furthest[start]
            stop = min(stop, n - left)
            if stop <= start:
                return None
        if prefix[stop] - prefix[start] > cap * (1 + 1e-12):
            return None
        bounds.append(stop)
        start = stop
    return tuple(bounds)
