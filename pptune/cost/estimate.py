"""estimate(): one configuration through the cost model's kernel, with per-stage detail and the timeline.

partition -> chunk costs -> schedule simulation -> communication -> memory -> an additive Breakdown. The
formulas are ``pptune.cost.rows.RowGroup``'s, the same that ``estimate_many`` runs for thousands of rows; here the
pipeline goes through the event-driven simulator (``pptune.cost.schedule``), which also records every op for the
timeline. See ``pptune.cost.rows`` for what each part of the Breakdown means.
"""

from __future__ import annotations

import numpy as np

from pptune.cost.cache import CostCache
from pptune.cost.checks import check_config
from pptune.cost.memory import MEMORY_PARTS
from pptune.cost.partition import stage_boundaries
from pptune.cost.rows import BREAKDOWN_PARTS, EventPool, RowGroup
from pptune.cost.types import Breakdown, Estimate, StageCost
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile


def estimate(profile: Profile, cluster: Cluster, config: ParallelConfig, *, timeline: bool = False,
             cache: CostCache | None = None) -> Estimate:
    """Predict step time, throughput, bubble and per-GPU memory of ``config`` for ``profile`` on ``cluster``.

    Args:
        profile: per-layer costs (measured, or analytic for the cluster's GPU).
        cluster: GPUs and links; its size must equal ``config.world_size``.
        config: the parallel configuration.
        timeline: also return every op's start and end (slower; for charts).
        cache: keeps structure (layer tables, splits, compiled schedules, per-stage terms) for later calls, as the
            planner's evaluator does; a fresh one when not given.

    Raises:
        ConfigError: the configuration cannot run this model on this cluster (numbers in the message), or the
            prediction is not a finite number (figures beyond what floats hold).
    """
    check_config(profile, cluster, config)
    cache = CostCache() if cache is None else cache
    bounds = stage_boundaries(profile, config, cache=cache)
    pool = EventPool(cache, timeline=timeline)
    with np.errstate(all="ignore"):  # out-of-range inputs end as the error below, not as numpy warnings
        group = RowGroup(profile, cluster, [config], [bounds], pool)
        pool.run()
        f = group.figures(pool)
    if f.errors[0] is not None:
        raise f.errors[0]
    sim = pool.runs[0]  # the pipeline with its messages (the group adds it first)
    pp, chunks = config.pp, len(bounds) - 1
    fwd, bwd = group.chunks.fwd_ms[0].tolist(), group.chunks.bwd_ms[0].tolist()
    parts = {name: f.memory_parts[name][0].tolist() for name in MEMORY_PARTS}
    totals = tuple(f.memory_bytes[0].tolist())
    stages = tuple(
        StageCost(
            stage=s, first_layer=bounds[s], last_layer=bounds[s + (config.vpp - 1) * pp + 1],
            layer_ranges=tuple((bounds[c], bounds[c + 1]) for c in range(s, chunks, pp)),
            fwd_ms=sum(fwd[c] for c in range(s, chunks, pp)), bwd_ms=sum(bwd[c] for c in range(s, chunks, pp)),
            busy_ms=sim.busy_ms[s], idle_ms=sim.idle_ms[s], peak_inflight_microbatches=sim.peak_inflight[s],
            memory_bytes=totals[s], memory_parts_bytes={name: parts[name][s] for name in MEMORY_PARTS},
        )
        for s in range(pp)
    )
    samples_per_s = float(f.samples_per_s[0])
    return Estimate(
        step_time_ms=float(f.step_ms[0]),
        breakdown=Breakdown(**{name: float(f.breakdown[name][0]) for name in BREAKDOWN_PARTS}),
        samples_per_s=samples_per_s, tokens_per_s=samples_per_s * profile.seq_len,
        tflops_per_gpu=float(f.tflops_per_gpu[0]), mfu=float(f.mfu[0]), bubble_fraction=sim.bubble_fraction,
        peak_memory_bytes=int(f.peak_memory_bytes[0]), memory_per_stage_bytes=totals,
        feasible=bool(f.feasible[0]), infeasible_reason=f.infeasible_reasons[0],
        stages=stages, boundaries=bounds, timeline=sim.timeline,
    )
