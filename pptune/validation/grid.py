"""The validation grid: configurations that fit this machine (2 ranks), all at one global batch size.

One global batch for the whole grid makes step time and throughput rank the configurations the same way,
so "did the model pick the fastest?" has a meaning. With 2 ranks the layouts are pp=2 (dp=1), pp=1 with
dp=2 and pp=1 with tp=2; pp=2 runs every micro-batch count from 1 to the global batch (powers of two) under each
partition, pp=1 x dp=2 every micro-batch size that leaves whole micro-batches per replica, pp=1 x tp=2 every
micro-batch size (checking the tp communication model against gloo runs of pptune's tensor-parallel layers).

One more row, pp=2 x tp=2, needs twice the ranks: it runs oversubscribed (4 processes on 2 cores), so it is a
correctness run (tp inside a pipeline, DeepSpeed's partitioned sends) that is reported but neither scored nor
used for calibration (``correctness_only``); its estimate assumes nodes enough to hold it (``cluster_for``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pptune.errors import ConfigError
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig

DEFAULT_MODEL = "gpt:layers=6,hidden=192,heads=4,seq=64,vocab=4096"  # the grid's model: a step takes 0.3-0.6 s here

DEFAULT_GLOBAL_BATCH = 16
DEFAULT_PARTITIONS = ("uniform", "balanced")
TENSOR_PARALLEL = 2
CORRECTNESS_MICROBATCHES = 4  # the pp 2 x tp 2 row: the micro-batch size closest to 4 micro-batches per step


def _powers_of_two_up_to(n: int) -> tuple[int, ...]:
    out, k = [], 1
    while k <= n:
        out.append(k)
        k *= 2
    return tuple(out)


def local_grid(
    *,
    ranks: int = 2,
    global_batch_size: int = DEFAULT_GLOBAL_BATCH,
    partitions: Sequence[str] = DEFAULT_PARTITIONS,
    micro_batch_sizes: Sequence[int] | None = None,
    data_parallel: bool = True,
    tensor_parallel: bool = True,
    dtype: str = "fp32",
) -> tuple[ParallelConfig, ...]:
    """Every grid configuration for ``ranks`` local processes at ``global_batch_size`` samples per step.

    Args:
        ranks: processes (pp = ranks with dp = 1, and pp = 1 with dp = ranks).
        global_batch_size: samples per optimizer step, the same for every configuration.
        partitions: layer splits tried for pp > 1 (``uniform``, ``parameters``, ``balanced``, ``type:...``).
        micro_batch_sizes: micro-batch sizes to try (default: powers of two up to the global batch).
        data_parallel: also the pp = 1, dp = ranks layout.
        tensor_parallel: also the pp = 1, tp = 2 layout (at ``ranks`` = 2) and one pp = 2 x tp = 2 correctness row.
        dtype: training precision (fp32 on CPUs: bf16 GEMMs are slow without AVX512-BF16).

    Raises:
        ConfigError: fewer than 2 ranks, or a global batch that leaves no configuration.
    """
    if ranks < 2:
        raise ConfigError(f"the validation grid needs at least 2 ranks, got {ranks}")
    if global_batch_size < 1:
        raise ConfigError(f"global batch size must be positive, got {global_batch_size}")
    sizes = tuple(micro_batch_sizes) if micro_batch_sizes else _powers_of_two_up_to(global_batch_size)
    configs: list[ParallelConfig] = []
    for mbs in sizes:
        if global_batch_size % mbs:
            continue
        for partition in partitions:
            configs.append(ParallelConfig(pp=ranks, dp=1, micro_batch_size=mbs, num_microbatches=global_batch_size // mbs,
                                          dtype=dtype, partition=partition))  # type: ignore[arg-type]
    if data_parallel:
        for mbs in sizes:
            if global_batch_size % (mbs * ranks):
                continue
            configs.append(ParallelConfig(pp=1, dp=ranks, micro_batch_size=mbs,
                                          num_microbatches=global_batch_size // (mbs * ranks), dtype=dtype,  # type: ignore[arg-type]
                                          partition="uniform"))
    if tensor_parallel and ranks == TENSOR_PARALLEL:
        tp = TENSOR_PARALLEL
        fits = [m for m in sizes if global_batch_size % m == 0]
        configs += [ParallelConfig(pp=1, tp=tp, dp=1, micro_batch_size=mbs, num_microbatches=global_batch_size // mbs,
                                   dtype=dtype, partition="uniform")  # type: ignore[arg-type]
                    for mbs in fits]
        if fits:
            mbs = min(fits, key=lambda m: (abs(global_batch_size // m - CORRECTNESS_MICROBATCHES), m))
            configs.append(ParallelConfig(pp=2, tp=tp, dp=1, micro_batch_size=mbs,
                                          num_microbatches=global_batch_size // mbs, dtype=dtype,  # type: ignore[arg-type]
                                          partition=partitions[-1]))  # type: ignore[arg-type]
    if not configs:
        raise ConfigError(f"global batch {global_batch_size} with micro-batch sizes {list(sizes)} leaves no configuration")
    return tuple(configs)


def correctness_only(config: ParallelConfig, *, ranks: int = 2) -> bool:
    """A row with more processes than ranks (cores): run and reported, not timed against the model."""
    return config.world_size > ranks


def cluster_for(cluster: Cluster, config: ParallelConfig) -> Cluster:
    """``cluster``, with nodes added (same links) when ``config`` needs more GPUs than it holds."""
    if config.world_size <= cluster.num_gpus:
        return cluster
    return cluster.replace(num_nodes=-(-config.world_size // cluster.gpus_per_node))
