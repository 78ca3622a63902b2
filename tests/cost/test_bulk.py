"""estimate_many() returns what estimate() returns (within 1e-9 relative) for random configurations, errors included."""

from __future__ import annotations

import dataclasses
import random

import pytest

from pptune.cost import estimate
from pptune.cost.bulk import estimate_many
from pptune.errors import PptuneError
from pptune.hardware import load_cluster
from pptune.model.spec import PRESETS
from pptune.parallel import ParallelConfig
from pptune.profile.analytic import analytic_profile
from pptune.testing.estimates import assert_same_summary


def _random_configs(rng: random.Random, n: int, gpus: int) -> list[ParallelConfig]:
    out: list[ParallelConfig] = []
    while len(out) < n:
        tp = rng.choice((1, 2, 4))
        pp = rng.choice((1, 2, 3, 4, 8))
        if gpus % (tp * pp):
            continue
        target = rng.choice(("deepspeed", "megatron"))
        schedule = "1f1b" if target == "deepspeed" or pp == 1 else rng.choice(("1f1b", "interleaved_1f1b", "zb_h1",
                                                                              "gpipe"))
        vpp = rng.choice((2, 3)) if schedule == "interleaved_1f1b" else 1
        m = pp * rng.choice((1, 2, 3)) if schedule == "interleaved_1f1b" else rng.choice((1, 2, 5, 8, 16))
        recomputes = ("none", "full", "every:2") + (("selective",) if target == "megatron" else ())
        try:
            out.append(ParallelConfig(
                tp=tp, pp=pp, dp=gpus // (tp * pp), micro_batch_size=rng.choice((1, 2, 4)), num_microbatches=m,
                schedule=schedule, vpp=vpp, zero_stage=rng.choice((0, 1, 2, 3)) if pp == 1 else rng.choice((0, 1)),
                recompute=rng.choice(recomputes), dtype=rng.choice(("bf16", "bf16", "fp16", "fp32")),
                partition=rng.choice(("uniform", "parameters", "balanced", "type:block", "type:nomatch")),
                sequence_parallel=target == "megatron" and tp > 1 and rng.random() < 0.5, target=target,
            ))
        except PptuneError:
            continue
    return out


def _compare(profile, cluster, configs) -> int:
    """How many configurations were estimated (not rejected) and agreed; ``profile`` may be ``{tp: profile}``."""
    same = 0
    for config, got in zip(configs, estimate_many(profile, cluster, configs), strict=True):
        try:
            ref = estimate(profile[config.tp] if isinstance(profile, dict) else profile, cluster, config)
        except PptuneError as exc:
            assert isinstance(got, PptuneError) and str(got) == str(exc), config.label()
            continue
        assert not isinstance(got, PptuneError), (config.label(), got)
        assert_same_summary(got, ref.summary(), config)
        same += 1
    return same


@pytest.mark.parametrize("seed", range(3))
def test_bulk_equals_estimate_on_synthetic_profiles(make_profile, make_cluster, seed):
    rng = random.Random(seed)
    profile = make_profile(blocks=12, edge_ms=0.8, tied=seed % 2 == 0, dtype="bf16",
                           micro_batch_sizes=(1, 2, 4))
    if seed == 2:  # a measured profile (two logits copies on the head stage, no dropout masks)
        profile = dataclasses.replace(profile, source="measured")
    # A small GPU on seed 0 so that many configurations do not fit (the reason strings must match too).
    cluster = make_cluster(16, gpus_per_node=4, memory_gib=1.6 if seed == 0 else 80.0)
    if seed == 1:  # calibrated overheads are part of the prediction too
        cluster = dataclasses.replace(cluster, per_microbatch_overhead_ms=0.3, per_step_overhead_ms=2.0)
    configs = _random_configs(rng, 250, 16)
    assert _compare(profile, cluster, configs) > 150


def _gpt2_medium_by_tp(cluster) -> dict:
    spec = PRESETS["gpt2-medium"]
    return {tp: analytic_profile(spec, cluster.gpu, tp=tp, micro_batch_sizes=(1, 2, 4)) for tp in (1, 2, 4)}


def test_bulk_equals_estimate_on_an_analytic_model():
    rng = random.Random(11)
    cluster = load_cluster("a100-80g", num_gpus=32)
    by_tp = _gpt2_medium_by_tp(cluster)
    configs = _random_configs(rng, 300, 32)
    for tp, profile in by_tp.items():
        _compare(profile, cluster, [c for c in configs if c.tp == tp])


def test_bulk_keeps_the_input_order_and_reports_errors_in_place(make_profile, make_cluster):
    profile = make_profile(blocks=4, edge_ms=0.5)
    cluster = make_cluster(8)
    configs = [ParallelConfig(pp=2, dp=4, num_microbatches=4), ParallelConfig(pp=8, num_microbatches=8),
               ParallelConfig(pp=4, dp=2, num_microbatches=8, partition="type:nomatch"),
               ParallelConfig(pp=2, dp=4, num_microbatches=4)]
    got = estimate_many(profile, cluster, configs)
    assert isinstance(got[1], PptuneError) and "6 pipeline layers" in str(got[1])
    assert isinstance(got[2], PptuneError) and "matches no layer" in str(got[2])
    assert got[0] == got[3] == estimate(profile, cluster, configs[0]).summary()


def test_bulk_with_one_profile_per_tp_pools_layouts_and_equals_estimate():
    """{tp: profile} with every tp and dp in one call: rows of one pipeline shape share a group."""
    rng = random.Random(5)
    cluster = load_cluster("a100-80g", num_gpus=32)
    configs = _random_configs(rng, 300, 32)
    assert len({(c.tp, c.dp) for c in configs if c.pp == 2}) > 1
    _compare(_gpt2_medium_by_tp(cluster), cluster, configs)
