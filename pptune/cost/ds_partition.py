"""DeepSpeed's ``partition_uniform`` and ``partition_balanced``, re-implemented exactly and fast (numpy, no torch).

DeepSpeed's own functions (``deepspeed/runtime/utils.py``) need ``import deepspeed`` (torch included: seconds)
and ``partition_balanced`` runs its O(n^2 p) dynamic programme in Python loops over numpy scalars (0.4 s for
98 layers into 64 parts). A planner asks for dozens of splits, so we run the same programme with the two
inner loops (over the part count ``j`` and the cut ``k``) as array operations. Every value is produced by
the same IEEE operations in the same order, so the result is DeepSpeed's, not an approximation;
``tests/cost/test_ds_partition.py`` checks it against DeepSpeed on random weights.
"""

from __future__ import annotations

import numpy as np


def partition_uniform(num_items: int, num_parts: int) -> tuple[int, ...]:
    """``deepspeed.runtime.utils.partition_uniform``: ``num_parts + 1`` boundaries, the first parts one larger."""
    if num_items <= num_parts:
        return tuple(min(p, num_items) for p in range(num_parts + 1))
    chunk, residual = divmod(num_items, num_parts)
    # DeepSpeed adds 1 to parts[i + 1:] for each i < residual: part p starts at p * chunk + min(p, residual).
    return tuple(p * chunk + min(p, residual) for p in range(num_parts + 1))


def partition_balanced(weights: tuple[int, ...] | tuple[float, ...], num_parts: int) -> tuple[int, ...]:
    """``deepspeed.runtime.utils.partition_balanced``: DeepSpeed's split of ``weights`` into ``num_parts``.

    DeepSpeed's programme (the "linear partition problem" page it cites) keeps, per prefix ``i`` and part
    count ``j``, one candidate: the cut ``k`` minimising ``max - min`` of the part sums, where ``max``/``min``
    extend the candidate of ``(k, j - 1)`` by the part ``[k, i)``. Its loop overwrites on ``>=``, so among
    equal costs the *last* ``k`` wins; ``dp_min[0, 0]`` stays ``inf`` and unreachable states cost ``inf``.
    We keep all of that: for each ``i`` every ``(k, j)`` pair at once, ties broken towards the last ``k``.
    """
    n, m = len(weights), num_parts
    if n <= m:
        return partition_uniform(n, m)
    return balanced_bounds(balanced_cuts(weights, m), m)


def balanced_cuts(weights: tuple[int, ...] | tuple[float, ...], max_parts: int) -> np.ndarray:
    """DeepSpeed's cut table for every part count up to ``max_parts`` (< len(weights)): ``position[i, j]``.

    Column ``j`` of the programme reads only column ``j - 1``, and DeepSpeed fills it for every prefix ``i >= j``
    whatever its ``num_parts``, so the table built for ``max_parts`` holds DeepSpeed's split for every smaller
    count too (``balanced_bounds``): one programme serves all pipeline depths of a layer table.
    """
    n, m = len(weights), max_parts
    dp_max = np.full((n + 1, m + 1), np.inf)
    dp_min = np.full((n + 1, m + 1), np.inf)
    position = np.zeros((n + 1, m + 1), dtype=np.int64)
    prefix = np.zeros(n + 1)
    prefix[1:] = np.cumsum(list(weights))  # as DeepSpeed: integer cumsum for int weights, then float64
    dp_max[0, 0] = 0
    for i in range(1, n + 1):
        parts = min(i, m)
        seg = (prefix[i] - prefix[:i])[:, None]  # part [k, i) for every k < i
        max_sum = np.maximum(dp_max[:i, :parts], seg)  # column j - 1 feeds part count j
        min_sum = np.minimum(dp_min[:i, :parts], seg)
        cost = max_sum - min_sum
        k = i - 1 - np.argmin(cost[::-1], axis=0)  # argmin takes the first minimum: reversed, the last k
        cols = np.arange(parts)
        dp_max[i, 1:parts + 1] = max_sum[k, cols]
        dp_min[i, 1:parts + 1] = min_sum[k, cols]
        position[i, 1:parts + 1] = k
    return position


def balanced_bounds(position: np.ndarray, num_parts: int) -> tuple[int, ...]:
    """DeepSpeed's ``num_parts + 1`` boundaries read back from a ``balanced_cuts`` table."""
    bounds = [position.shape[0] - 1]
    for j in range(num_parts, 0, -1):
        bounds.append(int(position[bounds[-1], j]))
    return tuple(reversed(bounds))
