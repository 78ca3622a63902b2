"""The local validation grid: which configurations it holds, all at one global batch, and its one-line errors."""

from __future__ import annotations

import pytest

from pptune.errors import ConfigError
from pptune.validation.grid import cluster_for, correctness_only, local_grid


def test_default_grid_covers_pipeline_and_data_parallel_at_one_global_batch() -> None:
    grid = local_grid()
    assert len(grid) >= 12
    assert {c.global_batch_size for c in grid} == {16}
    pipe = [c for c in grid if c.pp == 2 and c.tp == 1]
    assert sorted({c.num_microbatches for c in pipe}) == [1, 2, 4, 8, 16]
    assert {c.partition for c in pipe} == {"uniform", "balanced"}
    assert len(pipe) == 10
    dp = [c for c in grid if c.pp == 1 and c.tp == 1]
    assert {c.dp for c in dp} == {2} and sorted(c.micro_batch_size for c in dp) == [1, 2, 4, 8]
    tp = [c for c in grid if c.pp == 1 and c.tp == 2]
    assert {c.dp for c in tp} == {1} and sorted(c.micro_batch_size for c in tp) == [1, 2, 4, 8, 16]
    timed = [c for c in grid if not correctness_only(c)]
    assert all(c.world_size == 2 and c.dtype == "fp32" for c in timed)
    (extra,) = [c for c in grid if correctness_only(c)]  # one pp 2 x tp 2 run on 4 processes
    assert (extra.pp, extra.tp, extra.dp, extra.world_size) == (2, 2, 1, 4)
    assert len(set(grid)) == len(grid)
    assert not any(c.tp > 1 for c in local_grid(tensor_parallel=False))


def test_correctness_rows_are_estimated_on_nodes_enough() -> None:
    from pptune.hardware import CLUSTER_PRESETS

    local = CLUSTER_PRESETS["local-cpu"]
    big = next(c for c in local_grid() if correctness_only(c))
    assert cluster_for(local, big).num_gpus == 4 and cluster_for(local, big).intra_node_gbps == local.intra_node_gbps
    assert cluster_for(local, local_grid()[0]) is local


def test_micro_batch_sizes_that_do_not_divide_are_skipped() -> None:
    grid = local_grid(global_batch_size=6, micro_batch_sizes=(1, 2, 4), partitions=("uniform",))
    assert sorted((c.pp, c.tp, c.micro_batch_size) for c in grid) == [
        (1, 1, 1), (1, 2, 1), (1, 2, 2), (2, 1, 1), (2, 1, 2), (2, 2, 2)]  # pp 2 x tp 2: 3 micro-batches


@pytest.mark.parametrize("kwargs, match", [
    ({"ranks": 1}, "at least 2 ranks"),
    ({"global_batch_size": 0}, "must be positive"),
    ({"global_batch_size": 3, "micro_batch_sizes": (2,), "data_parallel": False}, "leaves no configuration"),
])
def test_bad_grids_raise_one_line(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        local_grid(**kwargs)
