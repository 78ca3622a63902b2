"""estimate_many() agrees with estimate() on the planner's largest pipelines (GPT-3 175B on 1,024 A100s).

The small random models of test_bulk.py never reach the shapes where the batched simulator skips long
steady states whose critical cycle spans many micro-batches (p2p lags on every stage boundary, 64 stages,
768 micro-batches); the exhaustive plan's own spaces do, for both targets.
"""

from __future__ import annotations

import random

import pytest

from pptune.cost import estimate
from pptune.cost.bulk import estimate_many
from pptune.testing.estimates import assert_same_summary
from pptune.testing.large_space import bulk_inputs


@pytest.mark.parametrize("target", ["deepspeed", "megatron"])
def test_bulk_equals_estimate_on_gpt3_175b_at_1024_gpus(target):
    cluster, configs, profiles = bulk_inputs(target)
    got = dict(zip(configs, estimate_many(profiles, cluster, configs), strict=True))
    rng = random.Random(7)
    # The deepest pipelines with the most micro-batches (the long steady states), and a random sample.
    deep = [c for c in configs if c.pp >= 32 and c.num_microbatches * c.vpp >= 192]
    for config in rng.sample(deep, 12) + rng.sample(configs, 12):
        assert_same_summary(got[config], estimate(profiles[config.tp], cluster, config).summary(), config)


def test_the_benchmark_cold_start_is_a_new_cost_cache(make_profile, make_cluster, monkeypatch):
    """bench_plan_speed's cold figures are a fresh CostCache: that is every cache empty only while no module of
    pptune.cost keeps one of its own (an lru_cache, or any module-level dict, list or set that a call fills)."""
    import functools
    import importlib
    import pkgutil

    import pptune.cost
    from pptune.cost import sim_batch
    from pptune.cost.cache import CostCache
    from pptune.parallel import ParallelConfig

    monkeypatch.setattr(sim_batch, "_LOOP_OPS_PER_LEVEL", 0)  # small shapes through the numpy paths (unions)
    profile = make_profile(blocks=8, edge_ms=0.5)
    cluster = make_cluster(16, gpus_per_node=4)
    configs = [ParallelConfig(tp=tp, pp=pp, dp=16 // (tp * pp), num_microbatches=m, schedule=s, vpp=v, zero_stage=z,
                              partition=part, target="megatron")
               for tp in (1, 2) for pp in (2, 4) for m in (8, 64, 128) for z in (0, 1) for part in ("balanced", "parameters")
               for s, v in (("1f1b", 1), ("interleaved_1f1b", 2)) if m % pp == 0]
    modules = [importlib.import_module(f"pptune.cost.{info.name}") for info in pkgutil.iter_modules(pptune.cost.__path__)]
    lru = [f"{m.__name__}.{name}" for m in modules for name, value in vars(m).items()
           if isinstance(value, functools._lru_cache_wrapper) and value.__module__ == m.__name__]
    assert lru == []

    def containers() -> dict[str, int]:  # every module-level dict, list or set of pptune.cost, by size
        return {f"{m.__name__}.{name}": len(value) for m in modules for name, value in vars(m).items()
                if isinstance(value, (dict, list, set)) and not name.startswith("__")}

    before = containers()
    cache = CostCache()
    estimate_many({1: profile, 2: profile}, cluster, configs, cache=cache)
    estimate(profile, cluster, configs[0], cache=cache, timeline=True)
    estimate_many({1: profile, 2: profile}, cluster, configs[:8])  # and without a cache (each call makes its own)
    assert containers() == before  # nothing the calls did stayed behind in a module
    assert sum(cache.sizes().values()) > 0  # the calls did fill caches: the CostCache the caller owns
    cache.clear()
    assert sum(cache.sizes().values()) == 0


def test_the_bit_identity_check_counts_every_differing_value():
    from pptune.testing.bit_identity import compare

    row = {"step_time_ms": (1.5).hex(), "feasible": True, "infeasible_reason": None}
    assert compare([row, ["error", "x"]], [dict(row), ["error", "x"]]) == (0, 0.0)
    moved = {**row, "step_time_ms": (1.5 * (1 + 1e-12)).hex()}
    differ, worst = compare([row], [moved])
    assert differ == 1 and 0 < worst < 2e-12
    assert compare([row, ["error", "x"]], [{**row, "feasible": False}, ["error", "y"]]) == (2, float("inf"))
