"""The readable summary ``pptune estimate`` prints: headline figures, the additive breakdown and a stage table."""

from __future__ import annotations

from pptune.cost.types import Estimate
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile

GIB = 2**30


def summary(profile: Profile, cluster: Cluster, config: ParallelConfig, est: Estimate) -> str:
    """A few lines a person reads: what was estimated, the headline, the breakdown, one row per stage."""
    b = est.breakdown
    worst = est.memory_per_stage_bytes.index(est.peak_memory_bytes)
    fits = "fits" if est.feasible else f"DOES NOT FIT: {est.infeasible_reason}"
    lines = [
        f"{profile.model} ({profile.source} profile, {profile.num_layers} layers) on {config.world_size} x "
        f"{cluster.gpu.name} ({cluster.name}), {config.target}, {config.dtype}",
        f"config: {config.label()}, global batch {config.global_batch_size}",
        f"step {est.step_time_ms:.2f} ms | {est.tokens_per_s:,.0f} tokens/s | {est.samples_per_s:,.2f} samples/s | "
        f"{est.tflops_per_gpu:.1f} TFLOP/s per GPU (MFU {100 * est.mfu:.1f}%)",
        f"bubble {100 * est.bubble_fraction:.1f}% | peak memory {est.peak_memory_bytes / GIB:.2f} GiB (stage {worst}) "
        f"of {cluster.gpu.memory_bytes / GIB:.1f} GiB: {fits}",
        "breakdown (ms): " + "  ".join(f"{k.removesuffix('_ms').replace('_', ' ')} {v:.2f}"
                                       for k, v in b.to_dict().items()) + f"  = {b.step_ms:.2f}",
    ]
    # Interleaved stages hold several layer ranges: the column is as wide as the longest.
    ranges = [",".join(f"{a}-{z - 1}" for a, z in (s.layer_ranges or ((s.first_layer, s.last_layer),)))
              for s in est.stages]
    w = max(12, *map(len, ranges))
    lines += ["", f"{'stage':>5} {'layers':>{w}} {'fwd ms':>9} {'bwd ms':>9} {'busy ms':>10} {'idle ms':>9} "
                  f"{'in-flight':>9} {'memory GiB':>10}"]
    for s, layers in zip(est.stages, ranges, strict=True):
        lines.append(f"{s.stage:>5} {layers:>{w}} {s.fwd_ms:>9.3f} {s.bwd_ms:>9.3f} {s.busy_ms:>10.2f} "
                     f"{s.idle_ms:>9.2f} {s.peak_inflight_microbatches:>9} {s.memory_bytes / GIB:>10.2f}")
    return "\n".join(lines)
