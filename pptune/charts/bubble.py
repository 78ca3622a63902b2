"""Bubble vs micro-batches: how the pipeline bubble and the throughput change with m, per pipeline depth.

The question: how many micro-batches does a pipeline of depth p need before its bubble stops mattering?
For uniform stages the 1F1B/GPipe bubble is ``(p - 1) / (m + p - 1)`` (Narayanan et al. SC'21, Sec. 2.2);
here every point is the cost model's full estimate with the plan's own profile, so uneven stages, p2p
transfers, the gradient reduction and the optimizer are in the throughput. Micro-batch size and tp stay
the plan's; dp is ``GPUs / (tp * p)``, so the global batch ``mbs * m * dp`` grows with m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pptune.charts.variants import try_estimate, with_depth
from pptune.cost.cache import CostCache
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile

NAN = float("nan")


@dataclass(frozen=True, kw_only=True, slots=True)
class BubbleLine:
    """One pipeline depth: a point per micro-batch count (NaN where the configuration cannot run)."""

    pp: int
    dp: int
    num_microbatches: tuple[int, ...]
    bubble_fraction: tuple[float, ...]
    tokens_per_s: tuple[float, ...]
    feasible: tuple[bool, ...]  # fits in GPU memory


@dataclass(frozen=True, kw_only=True, slots=True)
class BubbleChart:
    """Lines per depth and the chosen point."""

    lines: tuple[BubbleLine, ...]
    micro_batch_size: int
    tp: int
    schedule: str
    chosen_pp: int
    chosen_microbatches: int
    chosen_bubble_fraction: float
    chosen_tokens_per_s: float


def microbatch_counts(chosen: int, *, factor: int = 4, at_least: int = 1) -> tuple[int, ...]:
    """Powers of two from 1 up to the first one >= ``max(factor * chosen, at_least)``, plus ``chosen`` itself."""
    top = 1 << math.ceil(math.log2(max(1, factor * chosen, at_least)))
    return tuple(sorted({1 << k for k in range(top.bit_length())} | {chosen}))


def pipeline_depths(*, ranks: int, chosen: int, max_pp: int, count: int = 4) -> tuple[int, ...]:
    """The ``count`` divisors of ``ranks`` (GPUs / tp) up to ``max_pp`` nearest to ``chosen`` on a log scale."""
    divisors = [d for d in range(1, min(ranks, max_pp) + 1) if ranks % d == 0]
    near = sorted(divisors, key=lambda d: (abs(math.log2(d / chosen)), d))[:count]
    return tuple(sorted({*near, chosen}))


def bubble_series(profile: Profile, cluster: Cluster, config: ParallelConfig, *,
                  depths: tuple[int, ...] | None = None, microbatches: tuple[int, ...] | None = None,
                  cache: CostCache | None = None) -> BubbleChart:
    """Bubble fraction and tokens/s against the number of micro-batches, one line per pipeline depth.

    Args:
        profile: the plan's profile (at the plan's tp).
        cluster: the plan's cluster; every depth uses all its GPUs.
        config: the chosen configuration (its micro-batch size, tp, schedule, ZeRO, recompute and split).
        depths: pipeline depths to draw (default: divisors of GPUs / tp near the chosen pp).
        microbatches: micro-batch counts (default: powers of two up to 4x the chosen and 4x the deepest pp).

    Returns:
        A BubbleChart whose points are ``estimate(...)`` values.
    """
    cache = CostCache() if cache is None else cache  # the chart's estimates share its structure
    gpus = cluster.num_gpus
    if depths is None:
        depths = pipeline_depths(ranks=gpus // (config.tp * config.cp), chosen=config.pp, max_pp=profile.num_layers)
    if microbatches is None:
        # Deep pipelines need m of several times p before the bubble fades: reach 4x the deepest drawn.
        microbatches = microbatch_counts(config.num_microbatches, at_least=4 * max(depths))
    lines = []
    for pp in depths:
        bubble, tokens, fits = [], [], []
        for m in microbatches:
            est = try_estimate(profile, cluster, with_depth(config, pp=pp, gpus=gpus, num_microbatches=m),
                               cache=cache)
            bubble.append(NAN if est is None else est.bubble_fraction)
            tokens.append(NAN if est is None else est.tokens_per_s)
            fits.append(est is not None and est.feasible)
        width = config.tp * config.cp
        dp = gpus // (width * pp) if gpus % (width * pp) == 0 else 0
        lines.append(BubbleLine(pp=pp, dp=dp, num_microbatches=tuple(microbatches), bubble_fraction=tuple(bubble),
                                tokens_per_s=tuple(tokens), feasible=tuple(fits)))
    chosen = try_estimate(profile, cluster, config, cache=cache)
    return BubbleChart(lines=tuple(lines), micro_batch_size=config.micro_batch_size, tp=config.tp,
                       schedule=config.schedule, chosen_pp=config.pp, chosen_microbatches=config.num_microbatches,
                       chosen_bubble_fraction=NAN if chosen is None else chosen.bubble_fraction,
                       chosen_tokens_per_s=NAN if chosen is None else chosen.tokens_per_s)
