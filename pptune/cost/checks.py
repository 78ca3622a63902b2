"""Checks of a configuration against a profile and a cluster (ParallelConfig validates itself alone)."""

from __future__ import annotations

from pptune.errors import ConfigError
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile


def check_config(profile: Profile, cluster: Cluster, config: ParallelConfig) -> None:
    """Raise ConfigError, with the numbers, when ``config`` cannot run this model on this cluster."""
    chunks = config.pp * config.vpp
    if chunks > profile.num_layers:
        what = f"pp {config.pp}" if config.vpp == 1 else f"pp {config.pp} x vpp {config.vpp} = {chunks} chunks"
        raise ConfigError(f"{what} > {profile.num_layers} pipeline layers of {profile.model}: every chunk needs a layer")
    spec = profile.spec or {}
    heads = spec.get("num_heads")
    if heads and heads % config.tp:
        raise ConfigError(f"{heads} attention heads of {profile.model} are not divisible by tp {config.tp}")
    kv = spec.get("num_kv_heads")
    if kv and kv % config.tp:
        raise ConfigError(f"{kv} key/value heads of {profile.model} are not divisible by tp {config.tp}")
    if config.tp > cluster.gpus_per_node:
        raise ConfigError(f"tp {config.tp} > {cluster.gpus_per_node} GPUs per node of {cluster.name}: "
                          "tensor parallelism must stay inside a node")
    if cluster.num_nodes >= 1 and config.world_size != cluster.num_gpus:
        raise ConfigError(
            f"tp {config.tp} x pp {config.pp} x dp {config.dp} = {config.world_size} GPUs but cluster "
            f"{cluster.name} has {cluster.num_gpus} ({cluster.num_nodes} x {cluster.gpus_per_node})"
        )
    if config.schedule == "interleaved_1f1b" and config.num_microbatches % config.pp:
        raise ConfigError(f"interleaved_1f1b needs micro-batches per step {config.num_microbatches} "
                          f"to be a multiple of pp {config.pp} (Megatron's default group size)")
