"""Evaluator.evaluate_many: bulk summaries equal estimate(), errors stay per configuration, a later call gives the full Estimate."""

from __future__ import annotations

import dataclasses
import math

from pptune.cost import estimate
from pptune.cost.types import Estimate, EstimateSummary
from pptune.hardware import load_cluster
from pptune.model.spec import PRESETS
from pptune.parallel import ParallelConfig
from pptune.planner import Evaluator, build_space
from pptune.profile.analytic import analytic_profile


def _same(a: EstimateSummary, b: EstimateSummary) -> None:
    """Equal up to 1e-9 relative (the bulk path may skip a periodic steady state: ~1e-12 off)."""
    for name in ("step_time_ms", "samples_per_s", "tokens_per_s", "tflops_per_gpu", "mfu", "bubble_fraction"):
        assert math.isclose(getattr(a, name), getattr(b, name), rel_tol=1e-9), name
    for name, value in dataclasses.asdict(b.breakdown).items():
        assert math.isclose(getattr(a.breakdown, name), value, rel_tol=1e-9, abs_tol=1e-9), name
    assert (a.memory_per_stage_bytes, a.feasible, a.infeasible_reason, a.boundaries) == \
        (b.memory_per_stage_bytes, b.feasible, b.infeasible_reason, b.boundaries)


def _setup():
    cluster = load_cluster("a100-80g", num_gpus=16)
    spec = PRESETS["gpt2-small"]
    space = build_space(num_blocks=spec.num_layers, gpus=16, gpus_per_node=8, global_batch_size=64,
                        num_heads=spec.num_heads, target="megatron")
    profiles = {}

    def profile_for_tp(tp: int):
        profiles[tp] = analytic_profile(spec, cluster.gpu, tp=tp, micro_batch_sizes=space.micro_batch_sizes)
        return profiles[tp]

    return Evaluator(profile_for_tp=profile_for_tp, cluster=cluster), space, profiles, cluster


def test_evaluate_many_equals_estimate_and_upgrades_on_demand():
    evaluator, space, profiles, cluster = _setup()
    configs = list(space.configs())
    bad = ParallelConfig(tp=1, pp=16, dp=1, num_microbatches=4, vpp=1, target="megatron")  # 16 stages, 12 blocks + 2
    got = evaluator.evaluate_many(configs + [bad, configs[0]])
    assert len(got) == len(configs) + 2 and got[-1] is got[0]
    assert got[-2].estimate is None and "pipeline layers" in got[-2].error
    for ev in got[:-2]:
        assert isinstance(ev.estimate, EstimateSummary)
        _same(ev.estimate, estimate(profiles[ev.config.tp], cluster, ev.config).summary())
    assert [e.config for e in evaluator.evaluated] == configs + [bad]  # first-evaluation order
    full = evaluator(configs[3])
    assert isinstance(full.estimate, Estimate)
    _same(got[3].estimate, full.estimate.summary())
    assert evaluator(configs[3]) is full  # cached now
    assert len(evaluator.evaluated) == len(configs) + 1
