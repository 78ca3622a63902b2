"""Predict each published row with pptune's own model: analytic profile -> ``pptune.cost.estimate``.

Nothing here is specific to the fit: ``pptune validate`` evaluates committed constants with the same call.
Rows that share a model shape and micro-batch size share one analytic profile.
"""

from __future__ import annotations

from collections.abc import Sequence

from pptune.calibrate.constants import Constants
from pptune.calibrate.published import DTYPE, PublishedRow, row_config, row_spec
from pptune.cost.cache import CostCache
from pptune.cost.estimate import estimate
from pptune.hardware import Cluster, load_cluster
from pptune.profile.analytic import analytic_profile
from pptune.profile.schema import Profile


def predict_rows(rows: Sequence[PublishedRow], base: Cluster, constants: Constants, *,
                 cache: CostCache | None = None) -> list[float]:
    """Predicted iteration time (ms) of every row on ``base`` (resized per row) with ``constants`` applied.

    Args:
        rows: published runs.
        base: the node's cluster preset (e.g. ``a100-80g``); resized to each row's GPU count.
        constants: the model constants to apply.
        cache: the cost model's cache, kept across calls by a fit (a fresh one when not given).
    """
    cache = CostCache() if cache is None else cache
    cluster = constants.apply(base)
    profiles: dict[tuple, Profile] = {}
    clusters: dict[int, Cluster] = {}
    out = []
    for row in rows:
        spec = row_spec(row)
        key = (spec, row.tp, row.micro_batch)
        profile = profiles.get(key)
        if profile is None:
            profile = analytic_profile(spec, cluster.gpu, tp=row.tp, dtype=DTYPE, micro_batch_sizes=(row.micro_batch,),
                                       flash_attention=False)
            profiles[key] = profile
        sized = clusters.get(row.gpus)
        if sized is None:
            sized = clusters[row.gpus] = load_cluster(cluster, num_gpus=row.gpus)
        out.append(estimate(profile, sized, row_config(row), cache=cache).step_time_ms)
    return out


def relative_errors(predicted: Sequence[float], rows: Sequence[PublishedRow]) -> list[float]:
    """Signed relative errors (predicted / measured - 1)."""
    return [p / r.measured_ms - 1.0 for p, r in zip(predicted, rows, strict=True)]
