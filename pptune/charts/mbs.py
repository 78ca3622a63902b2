"""Micro-batch size tradeoff: throughput and per-stage peak memory against the micro-batch size.

The question: how large may a micro-batch be before a stage runs out of memory, and what does size buy?
The global batch and the layout (tp, pp, dp) stay the plan's, so ``m = global / (mbs * dp)``: larger
micro-batches run GEMMs more efficiently but leave fewer micro-batches to fill the pipeline. The memory line
crosses the GPU's limit where the estimate turns infeasible; ``oom_spans`` are those stretches, with the
crossing points interpolated linearly between neighbouring sizes. ``peak_parts_bytes`` explains each peak: the
peak stage's memory parts (``pptune.cost.memory.MEMORY_PARTS``: tensors, then what the framework adds).
"""

from __future__ import annotations

from dataclasses import dataclass

from pptune.charts.variants import try_estimate
from pptune.cost.cache import CostCache
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile

NAN = float("nan")
MAX_MICRO_BATCH_SIZE = 64


@dataclass(frozen=True, kw_only=True, slots=True)
class MbsChart:
    """One point per micro-batch size (index i), per-stage memory as ``memory_per_stage_bytes[i][stage]``."""

    micro_batch_sizes: tuple[int, ...]
    num_microbatches: tuple[int, ...]
    tokens_per_s: tuple[float, ...]
    bubble_fraction: tuple[float, ...]
    memory_per_stage_bytes: tuple[tuple[int, ...], ...]
    peak_memory_bytes: tuple[int, ...]
    feasible: tuple[bool, ...]
    memory_limit_bytes: int
    oom_spans: tuple[tuple[float, float], ...]  # [from, to] micro-batch sizes where peak memory > the limit
    pp: int
    chosen_micro_batch_size: int
    peak_parts_bytes: tuple[dict[str, int], ...] = ()  # per size, the peak stage's memory parts


def micro_batch_sizes(config: ParallelConfig, *, limit: int = MAX_MICRO_BATCH_SIZE) -> tuple[int, ...]:
    """Powers of two that divide the per-replica batch (DeepSpeed's batch rule), up to ``limit``, plus the chosen."""
    per_replica = config.global_batch_size // config.dp
    sizes = {1 << k for k in range(limit.bit_length()) if (1 << k) <= limit and per_replica % (1 << k) == 0}
    return tuple(sorted(sizes | {config.micro_batch_size}))


def oom_spans(sizes: tuple[int, ...], peaks: tuple[int, ...], limit: int) -> tuple[tuple[float, float], ...]:
    """Stretches of the size axis where the piecewise-linear peak-memory line lies above ``limit``.

    A stretch that begins at the first size or ends at the last one stops there (the chart extends it to the
    axis edge); inner ends are the interpolated crossings.
    """
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for i, (size, peak) in enumerate(zip(sizes, peaks, strict=True)):
        above = peak > limit
        if i == 0:
            start = float(size) if above else None
            continue
        prev_size, prev_peak = sizes[i - 1], peaks[i - 1]
        crossing = prev_size + (limit - prev_peak) / (peak - prev_peak) * (size - prev_size) if peak != prev_peak else size
        if above and start is None:
            start = crossing
        elif not above and start is not None:
            spans.append((start, crossing))
            start = None
    if start is not None:
        spans.append((start, float(sizes[-1])))
    return tuple(spans)


def mbs_series(profile: Profile, cluster: Cluster, config: ParallelConfig, *,
               sizes: tuple[int, ...] | None = None, cache: CostCache | None = None) -> MbsChart:
    """Throughput and per-stage peak memory for each micro-batch size at the plan's layout and global batch.

    Args:
        profile: the plan's profile (sizes between or beyond its profiled ones are interpolated by the profile).
        cluster: the plan's cluster (its GPU memory is the limit).
        config: the chosen configuration.
        sizes: micro-batch sizes (default: powers of two dividing the per-replica batch, up to 64).

    Returns:
        An MbsChart; sizes the cost model rejects are left out.
    """
    cache = CostCache() if cache is None else cache  # the chart's estimates share its structure
    if sizes is None:
        sizes = micro_batch_sizes(config)
    per_replica = config.global_batch_size // config.dp
    kept, ms, tokens, bubble, stages, peaks, fits, parts = [], [], [], [], [], [], [], []
    for size in sizes:
        if per_replica % size:
            continue
        est = try_estimate(profile, cluster, config.replace(micro_batch_size=size, num_microbatches=per_replica // size),
                           cache=cache)
        if est is None:
            continue
        kept.append(size)
        ms.append(per_replica // size)
        tokens.append(est.tokens_per_s)
        bubble.append(est.bubble_fraction)
        stages.append(tuple(est.memory_per_stage_bytes))
        peaks.append(est.peak_memory_bytes)
        fits.append(est.feasible)
        parts.append(dict(est.stages[est.memory_per_stage_bytes.index(est.peak_memory_bytes)].memory_parts_bytes))
    limit = cluster.gpu.memory_bytes
    return MbsChart(
        micro_batch_sizes=tuple(kept), num_microbatches=tuple(ms), tokens_per_s=tuple(tokens),
        bubble_fraction=tuple(bubble), memory_per_stage_bytes=tuple(stages), peak_memory_bytes=tuple(peaks),
        feasible=tuple(fits), memory_limit_bytes=limit,
        oom_spans=oom_spans(tuple(kept), tuple(peaks), limit) if kept else (),
        pp=config.pp, chosen_micro_batch_size=config.micro_batch_size, peak_parts_bytes=tuple(parts),
    )
