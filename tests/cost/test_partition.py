"""Partition methods: DeepSpeed's functions called as PipelineModule calls them, and the balanced split's optimality."""

from __future__ import annotations

import itertools
import os

import pytest

from pptune.cost.partition import min_max_split, stage_boundaries, type_weights
from pptune.errors import ConfigError
from pptune.parallel import ParallelConfig

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def _bottleneck(weights, bounds):
    return max(sum(weights[a:b]) for a, b in itertools.pairwise(bounds))


def test_uniform_and_parameters_call_deepspeed(make_profile):
    from deepspeed.runtime import utils as ds_utils

    profile = make_profile(blocks=10, edge_ms=0.5, tied=True)
    for pp in (1, 2, 3, 4, 5):
        got = stage_boundaries(profile, ParallelConfig(pp=pp, partition="uniform"))
        assert list(got) == [int(x) for x in ds_utils.partition_uniform(num_items=12, num_parts=pp)]
        assert all(type(x) is int for x in got)
    weights = [layer.param_count for layer in profile.layers]
    weights[-1] += weights[0]  # the tied head counts the embedding again, as _count_layer_params does
    got = stage_boundaries(profile, ParallelConfig(pp=4, partition="parameters"))
    assert list(got) == [int(x) for x in ds_utils.partition_balanced(weights=weights, num_parts=4)]


def test_type_regex_is_case_insensitive_and_lowercased_like_deepspeed():
    kinds = ("EmbeddingPipe", "TransformerBlockPipe", "TransformerBlockPipe", "HeadPipe")
    assert type_weights(kinds, "type:TransformerBlock") == (0, 1, 1, 0)
    assert type_weights(kinds, "type:head|EMBEDDING") == (1, 0, 0, 1)
    with pytest.raises(ConfigError, match="matches no layer"):
        type_weights(kinds, "type:Linear")


def test_balanced_is_optimal_against_brute_force():
    weights = (3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0)
    for parts in range(1, 6):
        best = min(_bottleneck(weights, (0, *cut, len(weights)))
                   for cut in itertools.combinations(range(1, len(weights)), parts - 1))
        got = min_max_split(weights, parts)
        assert len(got) == parts + 1 and got[0] == 0 and got[-1] == len(weights)
        assert all(b > a for a, b in itertools.pairwise(got)), got  # every chunk non-empty
        assert _bottleneck(weights, got) == pytest.approx(best)


def test_balanced_evens_out_a_heavy_head(make_profile):
    profile = make_profile(blocks=6, edge_ms=4.0)  # embedding worth ~3 blocks, head ~4
    uniform = stage_boundaries(profile, ParallelConfig(pp=4, partition="uniform"))
    balanced = stage_boundaries(profile, ParallelConfig(pp=4, partition="balanced"))
    work = [layer.timings[0].fwd_ms + layer.timings[0].bwd_ms for layer in profile.layers]
    assert _bottleneck(work, balanced) < _bottleneck(work, uniform)


def test_interleaved_splits_into_pp_times_vpp_chunks(make_profile):
    profile = make_profile(blocks=16)
    got = stage_boundaries(profile, ParallelConfig(pp=4, vpp=2, schedule="interleaved_1f1b", target="megatron",
                                                   num_microbatches=8, partition="uniform"))
    assert got == (0, 2, 4, 6, 8, 10, 12, 14, 16)


def test_too_many_chunks_is_a_config_error(make_profile):
    with pytest.raises(ConfigError, match="12 chunks"):
        stage_boundaries(make_profile(blocks=10), ParallelConfig(pp=6, vpp=2, schedule="interleaved_1f1b",
                                                                target="megatron"))
