"""The local validation grid: which configurations it holds, all at one global batch, and its one-line errors."""

from __future__ import annotations

import pytest

from pptune.errors import ConfigError
from pptune.validation.grid import local_grid


def test_default_grid_covers_pipeline_and_data_parallel_at_one_global_batch() -> None:
    grid = local_grid()
    assert len(grid) >= 12
    assert {c.global_batch_size for c in grid} == {16}
    pipe = [c for c in grid if c.pp == 2]
    assert sorted({c.num_microbatches for c in pipe}) == [1, 2, 4, 8, 16]
    assert {c.partition for c in pipe} == {"uniform", "balanced"}
    assert len(pipe) == 10
    dp = [c for c in grid if c.pp == 1]
    assert {c.dp for c in dp} == {2} and sorted(c.micro_batch_size for c in dp) == [1, 2, 4, 8]
    assert all(c.world_size == 2 and c.dtype == "fp32" for c in grid)
    assert len(set(grid)) == len(grid)


def test_micro_batch_sizes_that_do_not_divide_are_skipped() -> None:
    grid = local_grid(global_batch_size=6, micro_batch_sizes=(1, 2, 4), partitions=("uniform",))
    assert sorted((c.pp, c.micro_batch_size) for c in grid) == [(1, 1), (2, 1), (2, 2)]


@pytest.mark.parametrize("kwargs, match", [
    ({"ranks": 1}, "at least 2 ranks"),
    ({"global_batch_size": 0}, "must be positive"),
    ({"global_batch_size": 3, "micro_batch_sizes": (2,), "data_parallel": False}, "leaves no configuration"),
])
def test_bad_grids_raise_one_line(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        local_grid(**kwargs)
