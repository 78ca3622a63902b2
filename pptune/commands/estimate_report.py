"""The readable summary ``pptune estimate`` prints: headline figures, the additive breakdown and a stage table."""

from __future__ import annotations

from pptune.cost.types import Estimate
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile

GIB = 2**30


def summary(profile: Profile, cluster: Cluster, config: ParallelConfig, est: Estimate, *,
            headroom_gib: float = 0.0) -> str:
    """A few lines a person reads: what was estimated, the headline, the breakdown, one row per stage, and the
    memory parts of the peak stage with the margin (``headroom_gib`` kept free: ``--memory-headroom``)."""
    from pptune.cost.memory import FRAMEWORK_PARTS, TENSOR_PARTS, check_headroom, memory_margin

    b = est.breakdown
    worst = est.memory_per_stage_bytes.index(est.peak_memory_bytes)
    check_headroom(headroom_gib, cluster.gpu.memory_gib)
    margin = memory_margin(est.peak_memory_bytes, cluster.gpu.memory_bytes, headroom_gib)
    fits = margin if margin.startswith("fits") else f"DOES NOT FIT, {margin}"
    if not est.feasible:
        fits = f"DOES NOT FIT, {margin}: {est.infeasible_reason}"
    peak = est.stages[worst].memory_parts_bytes
    tensors = ", ".join(f"{k.replace('_', ' ')} {peak[k] / GIB:.2f}" for k in TENSOR_PARTS if peak.get(k))
    framework = ", ".join(f"{k.replace('_', ' ')} {peak[k] / GIB:.2f}" for k in FRAMEWORK_PARTS if peak.get(k))
    lines = [
        f"{profile.model} ({profile.source} profile, {profile.num_layers} layers) on {config.world_size} x "
        f"{cluster.gpu.name} ({cluster.name}), {config.target}, {config.dtype}",
        f"config: {config.label()}, global batch {config.global_batch_size}",
        f"step {est.step_time_ms:.2f} ms | {est.tokens_per_s:,.0f} tokens/s | {est.samples_per_s:,.2f} samples/s | "
        f"{est.tflops_per_gpu:.1f} TFLOP/s per GPU (MFU {100 * est.mfu:.1f}%)",
        f"bubble {100 * est.bubble_fraction:.1f}% | peak memory {est.peak_memory_bytes / GIB:.2f} GiB (stage {worst}) "
        f"of {cluster.gpu.memory_bytes / GIB:.1f} GiB: {fits}",
        f"memory of stage {worst} (GiB): tensors: {tensors or 'none'} | framework: {framework or 'none on this device'}",
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
