"""estimate_many(): what estimate() predicts, for thousands of configurations at once (the exhaustive planner's path).

Configurations are grouped by pipeline shape (pp, vpp; tp and dp vary by row) into ``pptune.cost.rows.RowGroup``,
the cost model's one kernel that ``estimate()`` runs for a single row too. Here the pipelines of all groups are
pooled by schedule shape, duplicate rows removed, and simulated together (``pptune.cost.sim_batch``, where shapes
differing only in micro-batch count share one run) instead of one by one through the event loop, so the figures
agree with estimate()'s within 1e-9 relative (``tests/cost/test_bulk.py``). The caller's CostCache keeps
structure and per-stage work across calls, never a configuration's result (``pptune.cost.cache``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from pptune.cost.cache import CostCache
from pptune.cost.checks import check_config
from pptune.cost.partition import stage_boundaries
from pptune.cost.rows import BREAKDOWN_PARTS, BatchPool, RowFigures, RowGroup
from pptune.cost.types import Breakdown, EstimateSummary, positional_constructor
from pptune.errors import PptuneError
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile

_OK = object()
# Thousands of results per call: positional constructors (fields in order; a test checks the order).
_SUMMARY = positional_constructor(EstimateSummary)
_BREAKDOWN = positional_constructor(Breakdown)


def estimate_many(profile: Profile | Mapping[int, Profile], cluster: Cluster, configs: Iterable[ParallelConfig], *,
                  cache: CostCache | None = None) -> list[EstimateSummary | PptuneError]:
    """Predict every configuration of ``configs``; each entry is a summary or the error estimate() would raise.

    Args:
        profile: per-layer costs: one profile for every configuration (as ``estimate(profile, ...)``), or one
            per tp degree (``{tp: profile}``; configurations of all degrees then share the pooled simulations).
        cluster: GPUs and links.
        configs: the configurations (any mix of layouts, schedules, ZeRO stages, targets).
        cache: keeps structure and per-stage work for later calls (the planner's evaluator owns one); a fresh one
            when not given.
    """
    configs = list(configs)
    cache = CostCache() if cache is None else cache
    profiles = profile if isinstance(profile, Mapping) else None
    out: list = [None] * len(configs)
    checked: dict[tuple, object] = {}
    splits: dict[tuple, object] = {}
    interned: dict[tuple[int, ...], tuple[int, ...]] = {}
    groups: dict[tuple, tuple[list[int], list[tuple[int, ...]]]] = {}
    for i, c in enumerate(configs):
        prof = profile if profiles is None else profiles[c.tp]
        key = (c.tp, c.pp, c.dp, c.vpp, c.schedule, c.num_microbatches)
        verdict = checked.get(key)
        if verdict is None:
            verdict = checked[key] = _try(lambda c=c, prof=prof: check_config(prof, cluster, c))
        if verdict is not _OK:
            out[i] = verdict
            continue
        key = (c.partition, c.pp, c.vpp, c.micro_batch_size, c.tp, c.dtype, c.sequence_parallel, c.recompute)
        bounds = splits.get(key)
        if bounds is None:
            bounds = _split(prof, c, key, cache)
            if isinstance(bounds, tuple):  # one object per distinct split: later keys use its identity
                bounds = interned.setdefault(bounds, bounds)
            splits[key] = bounds
        if isinstance(bounds, PptuneError):
            out[i] = bounds
            continue
        group = groups.get((c.pp, c.vpp))
        if group is None:
            group = groups[(c.pp, c.vpp)] = ([], [])
        group[0].append(i)
        group[1].append(bounds)
    with np.errstate(all="ignore"):  # out-of-range inputs end as per-row errors, not as numpy warnings
        pool = BatchPool(cache)
        prepared = [(idx, RowGroup(profile if profiles is None else profiles, cluster, [configs[i] for i in idx], bounds,
                                   pool)) for idx, bounds in groups.values()]
        pool.run()
        for idx, group in prepared:
            figures = group.figures(pool)
            for i, summary, error in zip(idx, _summaries(figures, group.bounds, group.seq_len), figures.errors, strict=True):
                out[i] = summary if error is None else error
    return out


def _summaries(f: RowFigures, bounds: list[tuple[int, ...]], seq_len: int) -> list[EstimateSummary]:
    # map() over columns: the per-row work is only the two constructors.
    breakdowns = map(_BREAKDOWN, *(f.breakdown[name].tolist() for name in BREAKDOWN_PARTS))
    samples = f.samples_per_s
    return list(map(_SUMMARY, f.step_ms.tolist(), breakdowns, samples.tolist(), (samples * seq_len).tolist(),
                    f.tflops_per_gpu.tolist(), f.mfu.tolist(), f.bubble_fraction.tolist(),
                    f.peak_memory_bytes.tolist(), map(tuple, f.memory_bytes.tolist()), f.feasible.tolist(),
                    f.infeasible_reasons, bounds))


def _split(profile: Profile, config: ParallelConfig, key: tuple, cache: CostCache) -> object:
    """stage_boundaries (or its error), kept in ``cache`` per profile content and split key."""
    return cache.get("splits", (cache.fingerprint(profile), *key),
                     lambda: _try(lambda: stage_boundaries(profile, config, cache=cache), value=True))


def _try(fn, *, value: bool = False):
    try:
        result = fn()
    except PptuneError as exc:
        return exc
    return result if value else _OK


