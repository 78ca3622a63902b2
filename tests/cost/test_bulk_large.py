"""estimate_many() agrees with estimate() on the planner's largest pipelines (GPT-3 175B on 1,024 A100s).

The small random models of test_bulk.py never reach the shapes where the batched simulator skips long
steady states whose critical cycle spans many micro-batches (p2p lags on every stage boundary, 64 stages,
768 micro-batches); the exhaustive plan's own spaces do, for both targets.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from pptune.cost import estimate
from pptune.cost.bulk import estimate_many

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_plan_speed import bulk_inputs  # noqa: E402
from test_bulk import _assert_same  # noqa: E402


@pytest.mark.parametrize("target", ["deepspeed", "megatron"])
def test_bulk_equals_estimate_on_gpt3_175b_at_1024_gpus(target):
    cluster, configs, profiles = bulk_inputs(target)
    got = dict(zip(configs, estimate_many(profiles, cluster, configs), strict=True))
    rng = random.Random(7)
    # The deepest pipelines with the most micro-batches (the long steady states), and a random sample.
    deep = [c for c in configs if c.pp >= 32 and c.num_microbatches * c.vpp >= 192]
    for config in rng.sample(deep, 12) + rng.sample(configs, 12):
        _assert_same(got[config], estimate(profiles[config.tp], cluster, config).summary(), config)


def test_the_benchmark_cold_start_empties_every_cost_model_cache(make_profile, make_cluster, monkeypatch):
    """bench_plan_speed's cold figures mean every cache empty: each module-level cache of pptune.cost (a dict named
    _UPPER or an lru_cache) that estimate_many fills must be emptied by clear_cost_caches."""
    import functools
    import importlib
    import pkgutil

    from bench_plan_speed import clear_cost_caches

    import pptune.cost
    from pptune.cost import sim_batch
    from pptune.parallel import ParallelConfig

    monkeypatch.setattr(sim_batch, "_LOOP_OPS_PER_LEVEL", 0)  # small shapes through the numpy paths (unions)
    profile = make_profile(blocks=8, edge_ms=0.5)
    cluster = make_cluster(16, gpus_per_node=4)
    configs = [ParallelConfig(tp=tp, pp=pp, dp=16 // (tp * pp), num_microbatches=m, schedule=s, vpp=v, zero_stage=z,
                              partition=part, target="megatron")
               for tp in (1, 2) for pp in (2, 4) for m in (8, 64, 128) for z in (0, 1) for part in ("balanced", "parameters")
               for s, v in (("1f1b", 1), ("interleaved_1f1b", 2)) if m % pp == 0]
    estimate_many({1: profile, 2: profile}, cluster, configs)
    estimate(profile, cluster, configs[0])
    caches = []
    for info in pkgutil.iter_modules(pptune.cost.__path__):
        module = importlib.import_module(f"pptune.cost.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, functools._lru_cache_wrapper) and value.__module__ == module.__name__:
                caches.append((f"{info.name}.{name}", lambda v=value: v.cache_info().currsize))
            elif isinstance(value, dict) and name.startswith("_") and name[1:].isupper():
                caches.append((f"{info.name}.{name}", lambda v=value: len(v)))
    filled = [name for name, size in caches if size()]
    assert {"stage_terms._TERMS", "chunks._TP_STAGES", "compiled.compile_schedule", "steady.family_offset",
            "sim_batch._UNIONS"} <= set(filled)  # the call did fill the caches this test is about
    clear_cost_caches()
    assert [name for name, size in caches if size()] == []


def test_the_bit_identity_check_counts_every_differing_value():
    from check_bulk_identical import compare

    row = {"step_time_ms": (1.5).hex(), "feasible": True, "infeasible_reason": None}
    assert compare([row, ["error", "x"]], [dict(row), ["error", "x"]]) == (0, 0.0)
    moved = {**row, "step_time_ms": (1.5 * (1 + 1e-12)).hex()}
    differ, worst = compare([row], [moved])
    assert differ == 1 and 0 < worst < 2e-12
    assert compare([row, ["error", "x"]], [{**row, "feasible": False}, ["error", "y"]]) == (2, float("inf"))
