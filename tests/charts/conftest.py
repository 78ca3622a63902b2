"""Factories for the chart tests: synthetic profiles, clusters with free or real links, and measured runs."""

from __future__ import annotations

import pytest

from pptune.hardware import GPU, Cluster
from pptune.profile.schema import LayerProfile, LayerTiming, Profile
from pptune.runtime.measured import Measured, RankRecord, TimerStat, stage_records

HIDDEN, SEQ = 256, 128


def synthetic_profile(*, blocks: int = 16, fwd_ms: float = 1.0, bwd_ms: float = 2.0, edges: bool = False,
                      saved_bytes: int = 8 * 2**20, param_count: int = 1_000_000) -> Profile:
    """``blocks`` identical blocks (plus a heavier embedding and head when ``edges``), linear in micro-batch size."""
    out = SEQ * HIDDEN * 2

    def layer(i: int, role: str, kind: str, k: float, params: int) -> LayerProfile:
        timings = tuple(
            LayerTiming(micro_batch_size=b, fwd_ms=fwd_ms * k * b, bwd_ms=bwd_ms * k * b, saved_bytes=saved_bytes * b,
                        output_bytes=out * b, fwd_flops=1e9 * k * b)
            for b in (1, 2, 4)
        )
        return LayerProfile(index=i, name=f"{role}.{i}", kind=kind, role=role, param_count=params,
                            param_bytes=2 * params, timings=timings)

    roles = [("block", "TransformerBlockPipe", 1.0, param_count)] * blocks
    if edges:  # a large-vocabulary embedding (many parameters, little time) and a slow head
        roles = [("embedding", "EmbeddingPipe", 0.1, 8 * param_count), *roles, ("head", "HeadPipe", 3.0, 1000)]
    layers = tuple(layer(i, *r) for i, r in enumerate(roles))
    return Profile(model="synthetic", source="analytic", device="test", device_name="test", dtype="bf16",
                   seq_len=SEQ, micro_batch_sizes=(1, 2, 4), layers=layers)


def synthetic_cluster(num_gpus: int, *, free_links: bool = True, memory_gib: float = 80.0) -> Cluster:
    """One node of ``num_gpus``; ``free_links`` makes communication vanish (to compare with closed forms)."""
    gpu = GPU(name="TestGPU", peak_bf16_tflops=100.0, peak_fp16_tflops=100.0, peak_fp32_tflops=10.0,
              memory_gib=memory_gib, hbm_gbps=1000.0)
    gbps, us = (1e12, 0.0) if free_links else (50.0, 10.0)
    return Cluster(name=f"test-{num_gpus}", gpu=gpu, gpus_per_node=num_gpus, num_nodes=1, intra_node_gbps=gbps,
                   inter_node_gbps=gbps, intra_node_latency_us=us, inter_node_latency_us=us)


def measured_run(*, pp: int, m: int, boundaries: tuple[int, ...], fwd_ms: float = 3.0, bwd_ms: float = 5.0) -> Measured:
    """A measured run whose every stage spent ``m * fwd_ms`` in ForwardPass and ``m * bwd_ms`` in BackwardPass."""
    ranks = tuple(
        RankRecord(rank=s, stage=s, dp_rank=0, layer_start=boundaries[s], layer_stop=boundaries[s + 1],
                   num_forward_funcs=boundaries[s + 1] - boundaries[s], param_count=1, peak_memory_bytes=1,
                   timers={"ForwardPass": TimerStat(per_step_ms=m * fwd_ms, calls_per_step=m),
                           "BackwardPass": TimerStat(per_step_ms=m * bwd_ms, calls_per_step=m)})
        for s in range(pp)
    )
    return Measured(plan_dir="x", model="synthetic", seq_len=SEQ, pp=pp, dp=1, tp=1, world_size=pp,
                    partition_method="explicit", boundaries=boundaries, planned_boundaries=boundaries,
                    micro_batch_size=1, num_microbatches=m, train_batch_size=m, dtype="bf16", zero_stage=0,
                    activation_checkpoint_interval=0, optimizer="Adam", warmup=1, step_times_ms=(100.0, 120.0, 110.0),
                    final_loss=None, deepspeed_timers=False, stages=stage_records(ranks), ranks=ranks, device="cpu",
                    device_name="test", threads=1, torch_version="x", deepspeed_version="x", date="x", command="x")


@pytest.fixture
def make_profile():
    return synthetic_profile


@pytest.fixture
def make_cluster():
    return synthetic_cluster


@pytest.fixture
def make_measured():
    return measured_run


def write_plan_dir(root, *, profile: Profile, cluster: Cluster, config, global_batch_size: int | None = None):
    """A plan directory in the planner's format (plan.json, ranking.csv, the profile beside it) for ``config``."""
    import csv
    import json

    from pptune.cost.estimate import estimate
    from pptune.profile.schema import save_profile

    root.mkdir(parents=True, exist_ok=True)
    profile_path = save_profile(profile, root / "profile.json")
    est = estimate(profile, cluster, config)
    plan = {
        "command": "pptune plan (test)", "model": {"name": profile.model, "source": str(profile_path),
                                                   "seq_len": profile.seq_len, "spec": None},
        "profile": str(profile_path), "cluster": cluster.to_dict(), "gpus": cluster.num_gpus,
        "global_batch_size": global_batch_size or config.global_batch_size, "label": config.label(),
        "config": config.to_dict(), "estimate": est.to_json_dict(),
        "search": {"space": {"micro_batch_sizes": list(profile.micro_batch_sizes)}},
    }
    (root / "plan.json").write_text(json.dumps(plan))
    with (root / "ranking.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["label", "pp", "tokens_per_s", "peak_memory_gib", "feasible"])
        writer.writeheader()
        for mbs in (1, 2, 4):
            c = config.replace(micro_batch_size=mbs)
            e = estimate(profile, cluster, c)
            writer.writerow({"label": c.label(), "pp": c.pp, "tokens_per_s": e.tokens_per_s,
                             "peak_memory_gib": e.peak_memory_bytes / 2**30, "feasible": e.feasible})
    return root


@pytest.fixture
def make_plan_dir():
    return write_plan_dir
