"""Checks of a configuration against a profile and a cluster (ParallelConfig validates itself alone).

The rules and their wording live in ``pptune.target_checks`` (its table: ``pptune.targets``; one table for ParallelConfig, these checks, the
schedule simulator, the search space and the emitters).
"""

from __future__ import annotations

from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile
from pptune.target_checks import check


def check_config(profile: Profile, cluster: Cluster, config: ParallelConfig) -> None:
    """Raise ConfigError, with the numbers, when ``config`` cannot run this model on this cluster."""
    check(config, profile, cluster)
