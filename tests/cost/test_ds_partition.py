"""pptune's re-implementation of DeepSpeed's partition_uniform/partition_balanced equals DeepSpeed's own output."""

from __future__ import annotations

import os
import random

import pytest

from pptune.cost.ds_partition import partition_balanced, partition_uniform

os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="module")
def ds_utils():
    from deepspeed.runtime import utils

    return utils


def _weights(rng: random.Random, n: int) -> list:
    kind = rng.randrange(5)
    if kind == 0:
        return [rng.randint(0, 5) for _ in range(n)]  # many ties
    if kind == 1:
        return [rng.randint(1, 10**9) for _ in range(n)]  # parameter counts
    if kind == 2:
        return [rng.choice((0, 1)) for _ in range(n)]  # type:regex weights
    if kind == 3:
        return [7] * n  # all equal: every tie-break matters
    return [rng.random() * 10 for _ in range(n)]  # floats


def test_uniform_equals_deepspeed(ds_utils):
    for items in range(0, 30):
        for parts in range(1, 20):
            expected = [int(x) for x in ds_utils.partition_uniform(num_items=items, num_parts=parts)]
            assert list(partition_uniform(items, parts)) == expected, (items, parts)


def test_balanced_equals_deepspeed_on_random_weights(ds_utils):
    rng = random.Random(7)
    for _ in range(300):
        n, parts = rng.randint(1, 36), rng.randint(1, 12)
        weights = _weights(rng, n)
        expected = [int(x) for x in ds_utils.partition_balanced(weights=list(weights), num_parts=parts)]
        got = partition_balanced(tuple(weights), parts)
        assert list(got) == expected, (weights, parts)
        assert all(type(x) is int for x in got)


def test_balanced_equals_deepspeed_on_a_large_model(ds_utils):
    # 96 blocks between an embedding and a tied head (GPT-3 175B's shape at tp 8), into many parts.
    block, emb = 1_812_099_072 // 8, 50_257 * 12_288 // 8
    weights = [emb] + [block + i % 3 for i in range(96)] + [2 * emb]
    for parts in (16, 48):
        expected = [int(x) for x in ds_utils.partition_balanced(weights=list(weights), num_parts=parts)]
        assert list(partition_balanced(tuple(weights), parts)) == expected


def test_one_cut_table_serves_every_part_count(ds_utils):
    # The planner builds DeepSpeed's programme once per weight vector (for len - 1 parts) and reads every smaller
    # pipeline depth from it: the same boundaries as DeepSpeed run for each depth separately.
    from pptune.cost.cache import CostCache
    from pptune.cost.ds_partition import balanced_bounds, balanced_cuts
    from pptune.cost.partition import _ds_balanced

    rng = random.Random(11)
    for _ in range(40):
        n = rng.randint(2, 30)
        weights = tuple(_weights(rng, n))
        table = balanced_cuts(weights, n - 1)
        for parts in range(1, n):
            expected = [int(x) for x in ds_utils.partition_balanced(weights=list(weights), num_parts=parts)]
            assert list(balanced_bounds(table, parts)) == expected, (weights, parts)
            assert list(_ds_balanced(CostCache(), weights, parts)) == expected
        assert _ds_balanced(CostCache(), weights, n + 2) == partition_uniform(n, n + 2)
