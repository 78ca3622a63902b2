"""Tensor-parallel shards cut from full layers: vocabulary ranges and padding, head and feature ranges, masking."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pptune.errors import ConfigError
from pptune.runtime.tp_comm import TensorParallel
from pptune.runtime.tp_layers import ColumnParallelLinear, VocabParallelEmbedding, split_range, vocab_range


def _tp(rank: int, size: int = 2) -> TensorParallel:
    return TensorParallel(size=size, rank=rank)


def test_vocab_ranges_cover_the_vocabulary_once_in_equal_padded_shards() -> None:
    for vocab, size in ((128, 2), (127, 2), (50257, 4), (5, 4)):
        ranges = [vocab_range(vocab, _tp(r, size)) for r in range(size)]
        assert {rows for _, _, rows in ranges} == {-(-vocab // size)}
        assert [i for start, stop, _ in ranges for i in range(start, stop)] == list(range(vocab))


def test_split_range_needs_an_even_split() -> None:
    assert [split_range(8, _tp(r), what="features") for r in (0, 1)] == [(0, 4), (4, 8)]
    with pytest.raises(ConfigError, match="heads 3 is not divisible by tp 2"):
        split_range(3, _tp(0), what="heads")


def test_vocab_shard_embeds_its_ids_and_zeros_for_the_others() -> None:
    full = nn.Embedding(5, 3)
    ids = torch.tensor([[0, 2, 3, 4]])
    shards = [VocabParallelEmbedding(full.weight, _tp(r)) for r in (0, 1)]  # rows 0-2 | 3-4 + one padding row
    assert [s.weight.shape[0] for s in shards] == [3, 3] and torch.equal(shards[1].weight[2], torch.zeros(3))
    torch.testing.assert_close(shards[0](ids) + shards[1](ids), full(ids))  # what the all-reduce adds up
    assert torch.equal(shards[1](ids)[0, :2], torch.zeros(2, 3))
    assert shards[1].weight.tensor_model_parallel and shards[1].weight.pptune_shard["ranges"] == [[3, 5]]


def test_fused_column_shard_keeps_its_rows_of_each_projection() -> None:
    full = nn.Linear(4, 12)  # q 0-4 | k 4-8 | v 8-12, each split over 2 ranks
    mine = ColumnParallelLinear(full, ((2, 4), (6, 8), (10, 12)))
    x = torch.randn(2, 4)
    torch.testing.assert_close(mine(x), full(x)[:, [2, 3, 6, 7, 10, 11]])
    assert mine.weight.partition_dim == 0 and mine.bias.tensor_model_parallel


def test_tensor_parallel_group_must_be_bound_before_use() -> None:
    tp = _tp(1)
    with pytest.raises(RuntimeError, match="before bind"):
        _ = tp.group
    with pytest.raises(ValueError, match="rank 2 of size 2"):
        TensorParallel(size=2, rank=2)
