"""Run records and measurements made up for tests: a cost-model prediction with a chosen measured time."""

from __future__ import annotations

from pptune.cost.estimate import estimate
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile
from pptune.validation.record import RunRecord, predicted_idle


def record(profile: Profile, cluster, config: ParallelConfig, *, measured_ms: float | None,
           measured_idle: float | None = 0.3) -> RunRecord:
    """A record predicted by the cost model, with a made-up measurement."""
    est = estimate(profile, cluster, config)
    return RunRecord(config=config, plan_dir="x", predicted_ms=est.step_time_ms, predicted_idle=predicted_idle(est, config),
                     breakdown_ms=est.breakdown.to_dict(), boundaries=est.boundaries, measured_ms=measured_ms,
                     measured_mean_ms=measured_ms, measured_min_ms=measured_ms, measured_max_ms=measured_ms,
                     measured_idle=measured_idle if measured_ms is not None else None,
                     failure=None if measured_ms is not None else "training failed")


def fake_measured(config: ParallelConfig, step_ms: float, *, boundaries: tuple[int, ...] = (0, 3, 6),
                  plan_dir: str = "/p", fwd_ms: float = 10.0):
    """A Measured of ``config`` whose steps all took ``step_ms`` (stage timers: forward ``fwd_ms``, backward twice)."""
    from pptune.runtime.measured import Measured, RankRecord, TimerStat, stage_records

    if config.pp == 1:
        boundaries = (0, boundaries[-1])
    ranks = tuple(
        RankRecord(rank=r, stage=r if config.pp > 1 else 0, dp_rank=0 if config.pp > 1 else r,
                   layer_start=boundaries[min(r, config.pp - 1)], layer_stop=boundaries[min(r, config.pp - 1) + 1],
                   num_forward_funcs=1, param_count=1000, peak_memory_bytes=2**20,
                   timers={"ForwardPass": TimerStat(per_step_ms=fwd_ms, calls_per_step=config.num_microbatches),
                           "BackwardPass": TimerStat(per_step_ms=2 * fwd_ms, calls_per_step=config.num_microbatches)})
        for r in range(config.world_size)
    )
    return Measured(
        plan_dir=plan_dir, model="tiny", seq_len=32, pp=config.pp, dp=config.dp, tp=1, world_size=config.world_size,
        partition_method="explicit", boundaries=boundaries[: config.pp + 1] if config.pp > 1 else boundaries,
        planned_boundaries=None, micro_batch_size=config.micro_batch_size, num_microbatches=config.num_microbatches,
        train_batch_size=config.global_batch_size, dtype="fp32", zero_stage=0, activation_checkpoint_interval=0,
        optimizer="AdamW", warmup=1, step_times_ms=(step_ms, step_ms, step_ms), final_loss=4.0, deepspeed_timers=False,
        stages=stage_records(ranks), ranks=ranks, device="cpu", device_name="test", threads=1, torch_version="2.13.0",
        deepspeed_version="0.19.8", date="2026-01-01T00:00:00+00:00", command="test",
    )
