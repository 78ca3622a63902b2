"""Benchmark the cost model: one estimate() of a 96-layer model (pp=8, m=64) and configurations per second in bulk.

Run: ``python benchmarks/bench_estimate.py [--repeat N] [--sample N]``. Prints a small table. ``cold`` passes a new,
empty CostCache to every call (layer table, split, compiled schedule; in the first row DeepSpeed's own
``partition_balanced`` programme too, which a plan computes once per (tp, pp)); ``warm`` repeats the same call with
one cache; ``bulk`` evaluates distinct configurations of one model one by one as the TPE search does (profiles built
once per tp beforehand, one CostCache as the search's evaluator holds; CPU seconds, so other processes on the machine
matter less).
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time

from pptune.cost import estimate
from pptune.cost.cache import LIMITS, CostCache
from pptune.errors import PptuneError
from pptune.hardware import load_cluster
from pptune.model.spec import PRESETS
from pptune.parallel import ParallelConfig
from pptune.profile.analytic import analytic_profile


def all_but_deepspeed_split(cache: CostCache) -> CostCache:
    """``cache`` emptied except for DeepSpeed's split programmes (which a plan computes once per (tp, pp))."""
    cache.clear(*(store for store in LIMITS if not store.startswith("ds_")))
    return cache


def time_one(repeat: int) -> dict[str, float]:
    spec = PRESETS["gpt3-175b"]  # 96 blocks (+ embedding and head)
    cluster = load_cluster("h100-80g", num_gpus=64)
    profile = analytic_profile(spec, cluster.gpu, tp=8, micro_batch_sizes=(1, 2))
    config = ParallelConfig(tp=8, pp=8, dp=1, micro_batch_size=1, num_microbatches=64, zero_stage=1,
                            recompute="full", target="megatron")
    warm, known = CostCache(), CostCache()
    estimate(profile, cluster, config, cache=warm)  # the first numpy calls
    estimate(profile, cluster, config, cache=known)  # DeepSpeed's split programme, kept by ``known``
    cases = {
        # every cache empty, DeepSpeed's O(n^2 p) partition_balanced included (once per (tp, pp) in a plan)
        "cold, parameters split": (config, lambda: CostCache(), max(5, repeat // 20)),
        # every other cache empty (layer table, split, compiled schedule); DeepSpeed's split programme remembered
        "cold, parameters split known": (config, lambda: all_but_deepspeed_split(known), repeat),
        "cold, balanced split": (config.replace(partition="balanced"), lambda: all_but_deepspeed_split(known),
                                 repeat),
        "warm (same call again)": (config, lambda: warm, repeat),
    }
    out = {}
    for label, (cfg, make_cache, n) in cases.items():
        times = []
        for _ in range(n):
            cache = make_cache()
            t0 = time.perf_counter()
            estimate(profile, cluster, cfg, cache=cache)
            times.append(time.perf_counter() - t0)
        out[label] = statistics.median(times) * 1e3
    return out


def sample_configs(n: int, gpus: int, seed: int) -> list[ParallelConfig]:
    rng = random.Random(seed)
    layouts = [(tp, pp, gpus // (tp * pp)) for tp, pp in itertools.product((1, 2, 4, 8), (1, 2, 4, 8, 16))
               if gpus % (tp * pp) == 0]
    configs: set[ParallelConfig] = set()
    while len(configs) < n:
        tp, pp, dp = rng.choice(layouts)
        target = rng.choice(("deepspeed", "megatron"))
        schedule = "1f1b" if target == "deepspeed" or pp == 1 else rng.choice(("1f1b", "interleaved_1f1b", "zb_h1"))
        mbs = rng.choice((1, 2, 4))
        m = pp * rng.choice((1, 2, 4, 8)) if schedule == "interleaved_1f1b" else rng.choice((1, 4, 8, 16, 32, 64))
        try:
            configs.add(ParallelConfig(
                tp=tp, pp=pp, dp=dp, micro_batch_size=mbs, num_microbatches=m, schedule=schedule,  # type: ignore[arg-type]
                vpp=2 if schedule == "interleaved_1f1b" else 1, zero_stage=rng.choice((0, 1)),
                recompute=rng.choice(("none", "full") if target == "deepspeed" else ("none", "selective", "full")),
                partition=rng.choice(("uniform", "parameters", "balanced")), target=target,  # type: ignore[arg-type]
                sequence_parallel=target == "megatron" and tp > 1 and rng.random() < 0.5))
        except PptuneError:
            continue
    return sorted(configs, key=lambda c: c.label())


def time_bulk(n: int, seed: int) -> dict[str, float]:
    spec, gpus = PRESETS["gpt3-13b"], 64
    cluster = load_cluster("h100-80g", num_gpus=gpus)
    profiles = {tp: analytic_profile(spec, cluster.gpu, tp=tp, micro_batch_sizes=(1, 2, 4)) for tp in (1, 2, 4, 8)}
    configs = sample_configs(n, gpus, seed)
    cache = CostCache()
    out: dict[str, float] = {"configs": len(configs)}
    for label in ("first pass", "second pass"):  # second: every split and compiled schedule is kept
        t0 = time.process_time()
        for config in configs:
            estimate(profiles[config.tp], cluster, config, cache=cache)
        out[label] = len(configs) / (time.process_time() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="calls per timing (median)")
    parser.add_argument("--sample", type=int, default=5000, help="distinct configurations in the bulk run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    one = time_one(args.repeat)
    bulk = time_bulk(args.sample, args.seed)
    print(f"{'estimate() gpt3-175b, 98 layers, tp8 pp8 m64':<52} {'median ms':>12}")
    for label, ms in one.items():
        print(f"  {label:<50} {ms:>12.3f}")
    title = f"bulk: gpt3-13b on 64 GPUs, {bulk['configs']:.0f} distinct configs"
    print(f"{title:<52} {'configs/s':>12}")
    for label in ("first pass", "second pass"):
        print(f"  {label:<50} {bulk[label]:>12,.0f}")


if __name__ == "__main__":
    main()
