"""estimate(): partition -> schedule simulation -> communication -> memory -> an additive Breakdown.

The step is split so that ``breakdown.step_ms`` is the prediction and each part explains itself:
- compute_ms / tp_comm_ms: the critical stage's (most busy) own compute and exposed TP collectives.
- bubble_ms: the rest of the pipeline makespan without p2p lags (warm-up, cool-down, imbalance waits).
- pp_comm_ms: what the p2p messages add to that makespan (lags; DeepSpeed's blocking sends lengthen the
  sender's op instead, see ``pptune.cost.chunks``).
- dp_comm_ms: the tail after the last backward: each stage reduces its gradients (and the tied embedding
  between first and last stage) once its own last op ends; the step waits for the slowest.
  DeepSpeed's pipeline engine does not overlap the reduction (``ReduceGrads`` follows the schedule);
  Megatron with ``--overlap-grad-reduce`` hides it behind the backward except the last bucket, which
  we take as the stage's first layer (the last whose gradients finish).
- optimizer_ms: the Adam step of the slowest stage, memory-bound: ``OPTIMIZER_BYTES_PER_PARAM`` bytes
  moved per optimizer-owned parameter over ``hbm_gbps * memory_efficiency``. Every stage waits for it
  (the step's global gradient norm couples all stages).
- overhead_ms: ``per_microbatch_overhead_ms * m * vpp + per_step_overhead_ms`` (calibrated; 0 by default).
"""

from __future__ import annotations

import functools

from pptune.cost import comm
from pptune.cost.checks import check_config
from pptune.cost.chunks import BLOCKING_SENDS, blocking_sends, chunk_costs
from pptune.cost.dp_sync import stage_sync
from pptune.cost.layers import LayerTable, layer_table
from pptune.cost.memory import optimizer_partitioned, stage_memory
from pptune.cost.partition import stage_boundaries
from pptune.cost.schedule import W_SHARE_OF_BACKWARD, ScheduleResult, simulate
from pptune.cost.types import Breakdown, Estimate, StageCost
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile

# Optimizer-step traffic per parameter (Megatron's mixed-precision optimizer, apex FusedAdam): unscale and
# check the fp32 gradients for inf/nan (read+write, 8), their global norm for clipping (read, 4), Adam
# (read the gradient, read+write the fp32 master weight, m and v: 28), copy the master into the 16-bit weight
# (read 4, write 2), zero the gradient buffer for the next step (write, 4). fp32 training has no loss
# scaling and no master copy: 4 + 28 + 4.
OPTIMIZER_BYTES_PER_PARAM = {"mixed": 50.0, "fp32": 36.0}


def estimate(profile: Profile, cluster: Cluster, config: ParallelConfig, *, timeline: bool = False) -> Estimate:
    """Predict step time, throughput, bubble and per-GPU memory of ``config`` for ``profile`` on ``cluster``.

    Args:
        profile: per-layer costs (measured, or analytic for the cluster's GPU).
        cluster: GPUs and links; its size must equal ``config.world_size``.
        config: the parallel configuration.
        timeline: also return every op's start and end (slower; for charts).

    Raises:
        ConfigError: the configuration cannot run this model on this cluster (numbers in the message).
    """
    check_config(profile, cluster, config)
    table = layer_table(profile, micro_batch_size=config.micro_batch_size, tp=config.tp, dtype=config.dtype,
                        sequence_parallel=config.sequence_parallel)
    bounds = stage_boundaries(profile, config)
    costs = chunk_costs(table, bounds, config, cluster, seq_len=profile.seq_len, w_share=W_SHARE_OF_BACKWARD)
    pp, m = config.pp, config.num_microbatches
    fwd, bwd, lags = costs.fwd_ms, costs.bwd_ms, costs.p2p_ms
    if config.target in BLOCKING_SENDS and any(lags):
        fwd, bwd, lags = blocking_sends(fwd, bwd, lags)
    sim = _simulate(fwd, bwd, costs.weight_grad_ms, config.schedule, m, lags, config.vpp, timeline)
    bare = sim if not any(costs.p2p_ms) else _simulate(costs.fwd_ms, costs.bwd_ms, costs.weight_grad_ms,
                                                       config.schedule, m, (0.0,) * len(costs.p2p_ms), config.vpp,
                                                       False)
    compute = [0.0] * pp
    tp_comm = [0.0] * pp
    for c in range(len(bounds) - 1):
        compute[c % pp] += m * (costs.compute_fwd_ms[c] + costs.compute_bwd_ms[c])
        tp_comm[c % pp] += m * (costs.tp_fwd_ms[c] + costs.tp_bwd_ms[c])
    crit = max(range(pp), key=lambda s: bare.busy_ms[s])
    params = [_stage_params(table, bounds, pp, s) for s in range(pp)]
    tail = _dp_tail(table, bounds, config, cluster, sim, params)
    optimizer_ms = max(_optimizer_ms(n, config, cluster) for n in params)
    breakdown = Breakdown(
        compute_ms=compute[crit],
        bubble_ms=bare.step_ms - bare.busy_ms[crit],
        pp_comm_ms=sim.step_ms - bare.step_ms,
        tp_comm_ms=tp_comm[crit],
        dp_comm_ms=tail - sim.step_ms,
        optimizer_ms=optimizer_ms,
        overhead_ms=cluster.per_microbatch_overhead_ms * m * config.vpp + cluster.per_step_overhead_ms,
    )
    step_ms = breakdown.step_ms
    memory = [stage_memory(table, bounds, config, s) for s in range(pp)]
    totals = tuple(sum(parts.values()) for parts in memory)
    peak = max(totals)
    limit = cluster.gpu.memory_bytes
    reason = None
    if peak > limit:
        worst = totals.index(peak)
        reason = (f"stage {worst} needs {peak / 2**30:.1f} GiB > {limit / 2**30:.1f} GiB of a {cluster.gpu.name} "
                  f"(activations {memory[worst]['activations'] / 2**30:.1f} GiB)")
    samples_per_s = config.global_batch_size / (step_ms / 1e3)
    tflops = _model_flops(table, config, profile.seq_len) / config.world_size / (step_ms / 1e3) / 1e12
    stages = tuple(
        StageCost(
            stage=s, first_layer=bounds[s], last_layer=bounds[s + (config.vpp - 1) * pp + 1],
            layer_ranges=tuple((bounds[c], bounds[c + 1]) for c in range(s, len(bounds) - 1, pp)),
            fwd_ms=sum(costs.fwd_ms[c] for c in range(s, len(bounds) - 1, pp)),
            bwd_ms=sum(costs.bwd_ms[c] for c in range(s, len(bounds) - 1, pp)),
            busy_ms=sim.busy_ms[s], idle_ms=sim.idle_ms[s], peak_inflight_microbatches=sim.peak_inflight[s],
            memory_bytes=totals[s], memory_parts_bytes=memory[s],
        )
        for s in range(pp)
    )
    return Estimate(
        step_time_ms=step_ms, breakdown=breakdown, samples_per_s=samples_per_s,
        tokens_per_s=samples_per_s * profile.seq_len, tflops_per_gpu=tflops,
        mfu=tflops / cluster.gpu.peak_tflops(config.dtype), bubble_fraction=sim.bubble_fraction,
        peak_memory_bytes=peak, memory_per_stage_bytes=totals, feasible=reason is None, infeasible_reason=reason,
        stages=stages, boundaries=bounds, timeline=sim.timeline,
    )


@functools.lru_cache(maxsize=8192)
def _simulate(fwd: tuple[float, ...], bwd: tuple[float, ...], w: tuple[float, ...], schedule: str, m: int,
              p2p: tuple[float, ...], vpp: int, timeline: bool) -> ScheduleResult:
    # Configurations that differ only in dp, ZeRO or target share a pipeline: simulate it once.
    return simulate(fwd, bwd, schedule=schedule, num_microbatches=m, p2p_ms=p2p, vpp=vpp, timeline=timeline,
                    w_ms=w if schedule == "zb_h1" else None)


def _stage_params(table: LayerTable, bounds: tuple[int, ...], pp: int, stage: int) -> int:
    total = 0
    for c in range(stage, len(bounds) - 1, pp):
        total += table.total("param_count", bounds[c], bounds[c + 1]) + table.tied_copy_on(bounds[c], bounds[c + 1])
    return total


def _dp_tail(table: LayerTable, bounds: tuple[int, ...], config: ParallelConfig, cluster: Cluster,
             sim: ScheduleResult, params: list[int]) -> float:
    """When the last stage finishes reducing its gradients (tied embedding included), from step start."""
    terms = stage_sync(table, bounds, config, cluster, params)
    tail = 0.0
    for s in range(config.pp):
        sync = terms.sync_ms[s] + comm.zero_exposed_ms(
            terms.zero_reduce_ms[s], terms.zero_gather_ms[s], zero_stage=config.zero_stage,
            num_microbatches=config.num_microbatches, busy_ms=sim.busy_ms[s])
        tail = max(tail, sim.end_ms[s] + terms.tied_ms[s] + sync)
    return max(tail, sim.step_ms)


def _optimizer_ms(params: int, config: ParallelConfig, cluster: Cluster) -> float:
    owned = params / config.dp if optimizer_partitioned(config) else params
    per_param = OPTIMIZER_BYTES_PER_PARAM["fp32" if config.dtype == "fp32" else "mixed"]
    gpu = cluster.gpu
    return owned * per_param / (gpu.hbm_gbps * gpu.memory_efficiency * 1e6)


def _model_flops(table: LayerTable, config: ParallelConfig, seq_len: int) -> float:
    """Model FLOPs of one step, no recompute: 3x the forward (backward = 2x forward; Kaplan et al. 2020).

    The profile's ``fwd_flops`` are per GPU (sharded by tp), so a micro-batch's model forward is their sum
    times tp; when the profile has no FLOPs we use ``2 * N`` per token (N = parameters of the model).
    """
    fwd = sum(table.fwd_flops) * config.tp
    if fwd <= 0:
        fwd = 2.0 * sum(table.param_count) * config.tp * config.micro_batch_size * seq_len
    return 3.0 * fwd * config.num_microbatches * config.dp
