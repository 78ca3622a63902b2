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
