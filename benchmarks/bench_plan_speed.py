"""Benchmark the exhaustive planner at thousand-GPU scale and the bulk cost model (issue 7, item 4).

Run: ``python benchmarks/bench_plan_speed.py [--runs 3] [--out results/benchmarks/plan_speed.md] [--baseline REV]``.

1. ``pptune plan gpt3-175b --cluster a100-80g --gpus 1024 --global-batch-size 1536 --exhaustive`` for the
   DeepSpeed and the Megatron target, as a user runs it (a fresh process: imports, search, plan directory,
   figures), wall-clock median of ``--runs`` runs, with the configurations it evaluated.
2. The bulk cost model (``pptune.cost.bulk.estimate_many``) on the same two spaces: configurations per
   second, cold (one call in a fresh process, as the planner makes it: every cost-model cache empty) and
   warm (caches of structure and per-stage work kept: layer tables, splits, compiled schedules and their unions,
   per-stage terms and link tables; no result reused), CPU seconds (other
   processes on the machine matter less) and wall seconds; and for comparison ``estimate()`` called once per
   configuration from a cold start (the path the search used).

3. With ``--baseline REV``: estimate_many cold and warm of git revision REV's ``pptune`` (extracted with
   ``git archive``) and of this tree, alternating run by run, so that both see the same machine (the shared
   cores' speed drifts by tens of percent over minutes).

Prints a Markdown table with the machine and its load; ``--out`` also writes it with the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pptune.fileio import cpu_name
from pptune.testing.large_space import TARGETS, bulk_inputs

PLAN = ["gpt3-175b", "--cluster", "a100-80g", "--gpus", "1024", "--global-batch-size", "1536", "--exhaustive"]


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip() or \
        " ".join(f"{x:.2f}" for x in os.getloadavg())


def time_plan(target: str, runs: int) -> dict:
    walls, searches, evaluated = [], [], None
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pptune", "plan", *PLAN, "--target", target, "--out", f"{tmp}/plan", "--json"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - t0)
        summary = json.loads(proc.stdout)
        searches.append(summary["search_seconds"])
        evaluated = summary["evaluations"]
    return {"wall_s": statistics.median(walls), "all_s": walls, "search_s": statistics.median(searches),
            "configs": evaluated}


def cost_cache() -> dict:
    """``{"cache": a new, empty CostCache}`` to pass to the cost model; ``{}`` for a revision that kept its caches
    in modules (before pptune.cost.cache: a fresh process starts them empty and every call shares them)."""
    try:
        from pptune.cost.cache import CostCache
    except ImportError:
        return {}
    return {"cache": CostCache()}


def time_bulk_once(target: str) -> dict:
    """One estimate_many call over the whole space in this (fresh) process: what ``pptune plan --exhaustive`` does."""
    from pptune.cost.bulk import estimate_many

    cluster, configs, profiles = bulk_inputs(target)
    cache = cost_cache()
    c0, w0 = time.process_time(), time.perf_counter()
    results = estimate_many(profiles, cluster, configs, **cache)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    assert len(results) == len(configs)
    warm = []
    for _ in range(3):
        c0 = time.process_time()
        estimate_many(profiles, cluster, configs, **cache)
        warm.append(time.process_time() - c0)
    return {"cpu_s": cpu, "wall_s": wall, "warm_cpu_s": statistics.median(warm)}


def baseline_tree(rev: str, into: Path) -> Path:
    """``pptune/`` of git revision ``rev`` extracted under ``into`` (git archive: the checkout is not touched)."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "pptune"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    # The inputs (pptune.testing's spaces) are this tree's, as when they lived in this file; only
    # the cost model that evaluates them is the revision's (older revisions have no pptune/testing at all).
    shutil.copytree(root / "pptune" / "testing", into / "pptune" / "testing", dirs_exist_ok=True)
    return into


def compare_bulk(target: str, runs: int, baseline: Path) -> dict:
    """estimate_many cold and warm of this tree and of the baseline's, run alternately (fresh processes)."""
    got: dict[str, list[dict]] = {"this": [], "baseline": []}
    for _ in range(runs):
        for name, env in (("baseline", {**os.environ, "PYTHONPATH": str(baseline)}), ("this", None)):
            got[name].append(json.loads(subprocess.run([sys.executable, __file__, "--bulk-once", target], env=env,
                                                       capture_output=True, text=True, check=True).stdout))
    return {name: {**{k: statistics.median(r[k] for r in rows) for k in ("cpu_s", "warm_cpu_s")},
                   **{f"best_{k}": min(r[k] for r in rows) for k in ("cpu_s", "warm_cpu_s")}}
            for name, rows in got.items()}


def time_bulk(target: str, runs: int) -> dict:
    from pptune.cost import estimate
    from pptune.cost.bulk import estimate_many
    from pptune.errors import PptuneError

    cluster, configs, profiles = bulk_inputs(target)
    out: dict = {"configs": len(configs)}
    # Cold: a fresh process per run (every cache empty, first numpy calls included), as the planner makes the call;
    # emptying the caches in a process that has run estimate() one by one reads up to 50% slower.
    cold = [json.loads(subprocess.run([sys.executable, __file__, "--bulk-once", target], capture_output=True,
                                      text=True, check=True).stdout) for _ in range(runs)]
    out["estimate_many, cold"] = {k: statistics.median(r[k] for r in cold) for k in ("cpu_s", "wall_s")}
    cpu, wall = [], []
    cache = cost_cache()
    estimate_many(profiles, cluster, configs, **cache)  # fills the cache
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        results = estimate_many(profiles, cluster, configs, **cache)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    assert len(results) == len(configs)
    out["estimate_many, warm"] = {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall)}
    # The per-configuration path the search used before: estimate() one by one (all its caches on, cold start).
    cpu, wall = [], []
    for _ in range(runs):
        cache = cost_cache()  # one cache for the whole loop, empty at its start (as the search's evaluator holds one)
        c0, w0 = time.process_time(), time.perf_counter()
        for config in configs:
            try:
                estimate(profiles[config.tp], cluster, config, **cache)
            except PptuneError:
                pass
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    out["estimate() one by one, cold"] = {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall)}
    return out


def report(plans: dict, bulks: dict, *, runs: int, load_before: str, load_after: str) -> str:
    lines = [
        f"machine: {machine()}",
        f"`uptime` before: {load_before}",
        f"`uptime` after: {load_after}",
        "",
        f"| exhaustive plan, GPT-3 175B, 1,024 A100-80GB, global batch 1536 | configurations | "
        f"wall s (median of {runs}) | runs | search s (in process) |",
        "|---|---:|---:|---|---:|",
    ]
    for target, r in plans.items():
        runs_s = ", ".join(f"{x:.1f}" for x in r["all_s"])
        lines.append(f"| `--target {target}` | {r['configs']:,} | {r['wall_s']:.1f} | {runs_s} | {r['search_s']:.2f} |")
    lines += [
        "",
        "| cost model on the same spaces (cold: a fresh process per run; warm: caches kept, no result reused) | "
        "configurations | path | CPU s | "
        "configs/s (CPU) | wall s | configs/s (wall) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for target, b in bulks.items():
        for label in ("estimate() one by one, cold", "estimate_many, cold", "estimate_many, warm"):
            t = b[label]
            lines.append(f"| {target} space | {b['configs']:,} | {label} | {t['cpu_s']:.3f} | "
                         f"{b['configs'] / t['cpu_s']:,.0f} | {t['wall_s']:.3f} | {b['configs'] / t['wall_s']:,.0f} |")
    return "\n".join(lines)


def compare_report(pairs: dict, bulks: dict, rev: str, runs: int, load_after: str) -> str:
    lines = [
        f"estimate_many of this tree and of `{rev}` on the same spaces, runs alternating (fresh processes, CPU s: "
        f"median of {runs}, best in brackets; `uptime` after: {load_after}):",
        "",
        "| space | configurations | cold, baseline | cold, this | configs/s cold (median) | warm, baseline | "
        "warm, this | configs/s warm (median) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target, p in pairs.items():
        n, b, t = bulks[target]["configs"], p["baseline"], p["this"]
        cells = [f"{x['cpu_s']:.3f} ({x['best_cpu_s']:.3f})" for x in (b, t)]
        cells += [f"{n / b['cpu_s']:,.0f} -> {n / t['cpu_s']:,.0f}"]
        cells += [f"{x['warm_cpu_s']:.3f} ({x['best_warm_cpu_s']:.3f})" for x in (b, t)]
        cells += [f"{n / b['warm_cpu_s']:,.0f} -> {n / t['warm_cpu_s']:,.0f}"]
        lines.append(f"| {target} | {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="also time estimate_many of git revision REV, alternating with this tree's runs")
    parser.add_argument("--bulk-once", choices=TARGETS, help=argparse.SUPPRESS)  # one cold run (a subprocess)
    args = parser.parse_args()
    if args.bulk_once:
        print(json.dumps(time_bulk_once(args.bulk_once)))
        return
    load_before = load()
    plans = {t: time_plan(t, args.runs) for t in TARGETS}
    bulks = {t: time_bulk(t, args.runs) for t in TARGETS}
    table = report(plans, bulks, runs=args.runs, load_before=load_before, load_after=load())
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            tree = baseline_tree(args.baseline, Path(tmp))
            pairs = {t: compare_bulk(t, args.runs, tree) for t in TARGETS}
        table += "\n\n" + compare_report(pairs, bulks, args.baseline, args.runs, load())
    print(table)
    if args.out is not None:
        command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        plan_cmd = "pptune plan " + " ".join(PLAN) + " --target {deepspeed,megatron}"
        text = (f"# Exhaustive planning speed\n\nCommand: `{command}` (each plan run is `{plan_cmd}` in a fresh "
                f"process, figures included)\n\n{table}\n")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
