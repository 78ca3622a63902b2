"""Neighbouring configurations of a plan that a chart compares with it, kept valid for their engine."""

from __future__ import annotations

from pptune.cost.cache import CostCache
from pptune.cost.estimate import estimate
from pptune.cost.types import Estimate
from pptune.errors import ConfigError
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile
from pptune.targets import rules_for


def with_depth(config: ParallelConfig, *, pp: int, gpus: int, num_microbatches: int | None = None) -> ParallelConfig | None:
    """``config`` at pipeline depth ``pp`` on the same GPUs (dp = gpus / (tp * cp * pp)), or None when impossible.

    ``num_microbatches`` defaults to the count that keeps the global batch (None when dp does not divide it).
    Schedule and ZeRO follow the engine's rules: one stage runs no interleaving (1F1B), and DeepSpeed's
    pipeline engine allows ZeRO 0 or 1 only (deepspeed/runtime/pipe/engine.py asserts it), so a ZeRO-2/3 plan
    with pp == 1 is shown at ZeRO 1 deeper.
    """
    width = config.tp * config.cp  # the ranks of one stage replica: tp x cp
    if pp < 1 or gpus % (width * pp):
        return None
    dp = gpus // (width * pp)
    if num_microbatches is None:
        samples = config.num_microbatches * config.dp  # micro-batches per step over all replicas
        if samples % dp:
            return None
        num_microbatches = samples // dp
    changes: dict[str, object] = {"pp": pp, "dp": dp, "num_microbatches": num_microbatches}
    if pp == 1:
        changes.update(schedule="1f1b", vpp=1)
    if pp > 1:  # the target's ZeRO limit with a pipeline (DeepSpeed's pipeline engine: 1)
        changes["zero_stage"] = min(config.zero_stage, rules_for(config.target, pp).max_zero_stage_with_pp)
    try:
        return config.replace(**changes)
    except ConfigError:
        return None


def try_estimate(profile: Profile, cluster: Cluster, config: ParallelConfig | None, *,
                 timeline: bool = False, cache: CostCache | None = None) -> Estimate | None:
    """The estimate, or None when the cost model rejects the configuration (e.g. m not a multiple of pp)."""
    if config is None:
        return None
    try:
        return estimate(profile, cluster, config, timeline=timeline, cache=cache)
    except ConfigError:
        return None
