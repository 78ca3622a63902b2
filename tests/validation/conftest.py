"""Factories for the validation, calibration and tune tests: a small synthetic profile, the local cluster, records."""

from __future__ import annotations

import pytest

from pptune.cost.estimate import estimate
from pptune.hardware import load_cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import LayerProfile, LayerTiming, Profile
from pptune.validation.record import RunRecord, predicted_idle

TINY = "gpt:layers=2,hidden=64,heads=2,seq=32,vocab=128"
TINY_SPEC = {"name": TINY, "num_layers": 4, "hidden_size": 64, "num_heads": 2, "ffn_hidden_size": 256,
             "vocab_size": 128, "seq_len": 32, "num_kv_heads": None, "tied_embeddings": True, "norm": "layernorm",
             "mlp": "gelu", "position": "learned"}


def small_profile(*, blocks: int = 4, block_ms: float = 2.0, head_ms: float = 6.0,
                  sizes: tuple[int, ...] = (1, 2, 4, 8, 16)) -> Profile:
    """Embedding, ``blocks`` blocks and a head three blocks heavy; times linear in the micro-batch size."""
    hidden, seq = 64, 32

    def timings(fwd: float) -> tuple[LayerTiming, ...]:
        return tuple(LayerTiming(micro_batch_size=b, fwd_ms=fwd * b, bwd_ms=2 * fwd * b, saved_bytes=4096 * b,
                                 output_bytes=seq * hidden * 4 * b) for b in sizes)

    layers = [LayerProfile(index=0, name="embedding", kind="EmbeddingPipe", role="embedding", param_count=10_000,
                           param_bytes=40_000, timings=timings(0.1))]
    for i in range(blocks):
        layers.append(LayerProfile(index=i + 1, name=f"block.{i}", kind="TransformerBlockPipe", role="block",
                                   param_count=50_000, param_bytes=200_000, timings=timings(block_ms)))
    layers.append(LayerProfile(index=blocks + 1, name="head", kind="HeadPipe", role="head", param_count=128,
                               param_bytes=512, timings=timings(head_ms)))
    spec = dict(TINY_SPEC, num_layers=blocks)
    return Profile(model=TINY, source="measured", device="cpu", device_name="test", dtype="fp32", seq_len=seq,
                   micro_batch_sizes=sizes, layers=tuple(layers), threads=1, spec=spec)


@pytest.fixture
def profile() -> Profile:
    return small_profile()


@pytest.fixture
def cluster():
    return load_cluster("local-cpu")


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
