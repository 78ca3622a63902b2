"""Benchmark the planner's search: Optuna's regret against the exhaustive best, and the time of both.

Run: ``python benchmarks/bench_search.py [--trials 200] [--seeds 5] [--out results/benchmarks/search.txt]``.
For each model/cluster case it evaluates the whole space (``exhaustive=True``, the reference), then runs
TPE (``--trials``) with ``--seeds`` seeds as ``pptune plan`` runs it (per-layout warm start, then the 3 best layouts
polished: all their configurations evaluated), without the polish, and without either, and NSGA-II
(``--objective pareto``) once per seed; regret = 1 - best tokens/s found / exhaustive best tokens/s.
Studies are in memory, so the times measure the search, not SQLite (the CLI's default storage adds tens of
ms per trial). Wall-clock seconds on a shared machine: compare the columns, not the absolute values.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path

from pptune.fileio import cpu_name

CASES = (  # model, cluster, GPUs, global batch, target
    ("gpt2-medium", "a100-80g", 16, 256, "deepspeed"),
    ("llama2-7b", "h100-80g", 32, 512, "deepspeed"),
    ("gpt3-13b", "a100-80g", 64, 1024, "deepspeed"),
    ("llama2-70b", "h100-80g", 64, 1024, "deepspeed"),
    ("gpt3-175b", "a100-80g", 256, 1536, "deepspeed"),
    ("llama2-13b", "h100-80g", 32, 512, "megatron"),
)


def _git() -> str:
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def run_case(model: str, cluster: str, gpus: int, gbs: int, target: str, *, trials: int, seeds: int) -> list[str]:
    from pptune.planner import PlanSettings, plan

    t = time.perf_counter()
    ref = plan(model, cluster=cluster, gpus=gpus, global_batch_size=gbs,
               settings=PlanSettings(target=target, exhaustive=True))
    ex_s = time.perf_counter() - t
    best = ref.estimate.tokens_per_s
    lines = [f"{model} on {gpus} x {cluster}, global batch {gbs}, target {target}: {len(ref.ranking)} configurations "
             f"({int(ref.ranking['feasible'].sum())} fit); exhaustive {ex_s:.1f} s, best {ref.best.label()} "
             f"{best:,.0f} tokens/s"]
    for name, kw in (("tpe (default)", dict(warm_start=True)),
                     ("tpe, no polish", dict(warm_start=True, polish=False)),
                     ("tpe, no warm start", dict(warm_start=False, polish=False)),
                     ("nsga2 (pareto)", dict(objective="pareto"))):
        regrets, secs, distinct = [], [], []
        for seed in range(seeds):
            t = time.perf_counter()
            r = plan(model, cluster=cluster, gpus=gpus, global_batch_size=gbs,
                     settings=PlanSettings(target=target, trials=trials, seed=seed, **kw))
            secs.append(time.perf_counter() - t)
            regrets.append(100 * (1 - r.estimate.tokens_per_s / best))
            distinct.append(len(r.ranking))
        within = sum(x <= 2.0 for x in regrets)
        lines.append(f"  {name:<20} regret % per seed {' '.join(f'{x:5.2f}' for x in regrets)} | max {max(regrets):5.2f} "
                     f"| within 2%: {within}/{seeds} | {statistics.median(secs):5.1f} s median, "
                     f"{statistics.median(distinct):.0f} distinct configs of {len(ref.ranking)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = p.parse_args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    warnings.simplefilter("ignore")
    import optuna

    header = [
        f"command: python benchmarks/bench_search.py {shlex.join(argv if argv is not None else sys.argv[1:])}",
        f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, optuna {optuna.__version__}",
        f"git: {_git()}",
        f"date: {time.strftime('%Y-%m-%d')}; TPE/NSGA-II {args.trials} trials, seeds 0..{args.seeds - 1}, in-memory studies",
        "",
    ]
    print("\n".join(header), flush=True)
    lines = list(header)
    for case in CASES:
        block = run_case(*case, trials=args.trials, seeds=args.seeds)
        print("\n".join(block), flush=True)
        lines += block
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
