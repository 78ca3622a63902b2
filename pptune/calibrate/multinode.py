"""Held-out check: pptune's committed A100 constants against published multi-node runs (nothing fitted on them).

Usage: ``python benchmarks/published_multinode.py [--out results/validation/published]`` (or
``python -m pptune.calibrate.multinode``). Writes ``multinode.md`` (per-source error statistics and every run) and
``multinode.csv``. The sources and what each run assumes are in ``pptune/calibrate/published_runs.py``. Each run is predicted by the path ``pptune estimate --batch``
takes for its line (``published_runs.batch_item``): a spec string with ``attention=unfused`` (as these Megatron
versions ran), the run's ``overlap_grad_reduce`` (2021 Megatron: false), the ``a100-80g`` preset resized to the
run's GPUs with the source's inter-node bandwidth.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import statistics
from pathlib import Path

from pptune.batch_lines import estimate_item
from pptune.calibrate.published_runs import (
    PublishedRun,
    batch_item,
    bloom_run,
    korthikanti_runs,
    mtnlg_runs,
    sc21_runs,
    vtrain_runs,
)
from pptune.calibrate.report import write_text
from pptune.cost.types import Estimate
from pptune.hardware import load_cluster

CLUSTER = "a100-80g"


def predict(run: PublishedRun, cluster: str = CLUSTER) -> Estimate:
    """pptune's estimate of one published run, by the path ``pptune estimate --batch`` takes for its line.

    The line (``published_runs.batch_item``) says ``attention=unfused`` and, for 2021 Megatron,
    ``"overlap_grad_reduce": false``: the whole data-parallel all-reduce after the backward
    (``pptune.cost.dp_sync``), as ``pptune estimate --attention unfused --no-overlap-grad-reduce`` prices it.
    """
    return estimate_item(batch_item(run, load_cluster(cluster)))[3]


UNSTATED_MICRO_BATCHES = (1, 2, 4, 8)
UNSTATED_VPP = (1, 2, 3, 4, 5, 6, 8)


def with_chosen_knobs(run: PublishedRun) -> PublishedRun:
    """A run whose source does not state micro-batch size and interleaving, with pptune's fastest feasible choice.

    The authors tuned those knobs for speed, so the check compares the measured time with the best pptune predicts
    for the published tp/pp/dp and global batch (Megatron's constraints: micro-batches divide the per-replica batch;
    interleaving needs layers divisible by pp * vpp and micro-batches divisible by pp).
    """
    if run.knobs_stated:
        return run
    per_replica = run.global_batch // run.dp
    best: tuple[float, PublishedRun] | None = None
    for mbs in UNSTATED_MICRO_BATCHES:
        if per_replica % mbs:
            continue
        for vpp in UNSTATED_VPP if run.pp > 1 else (1,):
            if vpp > 1 and (run.layers % (run.pp * vpp) or (per_replica // mbs) % run.pp):
                continue
            candidate = dataclasses.replace(run, micro_batch=mbs, vpp=vpp)
            est = predict(candidate)
            if est.feasible and (best is None or est.step_time_ms < best[0]):
                best = (est.step_time_ms, candidate)
    if best is None:
        raise ValueError(f"{run.source} {run.name}: no micro-batch size and interleaving fit in memory")
    return best[1]


def same_pipeline_lines() -> list[str]:
    """Table rows comparing runs of one model whose pipelines are the same, in different software.

    Seconds per pipeline slot = (measured time - pptune's exposed data-parallel time) / (m + (pp - 1) / v): the
    time one micro-batch's forward + backward occupies a stage, bubble removed. Same model, tp and pp, so a
    difference is the software's, not the hardware's. SC'21 does not state v: both ends of its range are shown.
    """
    kort = {r.name: r for r in korthikanti_runs()}
    sc21 = {r.name: r for r in sc21_runs()}
    mtnlg = mtnlg_runs()[0]
    cases = (("530B", kort["530B full"], ((sc21["529.6B"], "Megatron-LM 2021 (SC'21)", (1, 3)),
                                         (mtnlg, "Megatron-DeepSpeed 2021 (MT-NLG)", (1,)))),
             ("1T", kort["1T full"], ((sc21["1008B"], "Megatron-LM 2021 (SC'21)", (1, 2)),)))
    rows = []
    for model, ref, others in cases:
        def slot(run: PublishedRun, vpp: int) -> tuple[float, int]:
            run = dataclasses.replace(run, micro_batch=1, vpp=vpp)
            m = run.global_batch // run.dp
            exposed_s = predict(run).breakdown.dp_comm_ms / 1e3 if run.dp > 1 else 0.0
            return (run.measured_s - exposed_s) / (m + (run.pp - 1) / vpp), m
        ref_slot, ref_m = slot(ref, ref.vpp)
        rows.append(f"| {model} | Megatron-LM 2022 (Korthikanti, full recompute) | {ref.dp} | {ref_m} | v{ref.vpp} | "
                    f"{ref.measured_s:.2f} | {ref_slot * 1e3:.1f} | reference |")
        for run, software, vpps in others:
            for vpp in vpps:
                t, m = slot(run, vpp)
                rows.append(f"| {model} | {software} | {run.dp} | {m} | v{vpp} | {run.measured_s:.2f} | {t * 1e3:.1f} | "
                            f"{(t / ref_slot - 1) * 100:+.1f}% |")
    return rows


def _stats(errors: list[float]) -> str:
    pct = [abs(e) * 100 for e in errors]
    return (f"n={len(pct)}: {statistics.fmean(pct):.1f}% mean, {statistics.median(pct):.1f}% median, "
            f"{max(pct):.1f}% max, {statistics.fmean(errors) * 100:+.1f}% mean signed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/validation/published")
    args = parser.parse_args(argv)
    runs = korthikanti_runs() + sc21_runs() + mtnlg_runs() + [bloom_run()] + vtrain_runs()
    lines, csv_lines, by_source = [], ["source,name,gpus,tp,pp,dp,mbs,gbs,measured_s,predicted_s,error_pct"], {}
    across: list[float] = []  # runs whose tp groups span nodes (tp 16 on 8-GPU nodes)
    for run in runs:
        gpus = run.tp * run.pp * run.dp
        run = with_chosen_knobs(run)
        where = f"tp {run.tp} pp {run.pp}{f' v{run.vpp}' if run.vpp > 1 else ''} dp {run.dp} mbs {run.micro_batch} gbs {run.global_batch}"
        if not run.knobs_stated:
            where += " (mbs, v: pptune's choice)"
        est = predict(run)
        err = est.step_time_ms / 1e3 / run.measured_s - 1
        by_source.setdefault(run.source, []).append(err)
        if run.tp > 8:
            across.append(err)
        lines.append(f"| {run.source} | {run.name} | {gpus} | {where} | {run.measured_s:.2f} | "
                     f"{est.step_time_ms / 1e3:.2f} | {err * 100:+.1f}% | {est.tflops_per_gpu:.0f} |")
        csv_lines.append(f"{run.source},{run.name},{gpus},{run.tp},{run.pp},{run.dp},{run.micro_batch},"
                         f"{run.global_batch},{run.measured_s:.3f},{est.step_time_ms / 1e3:.3f},{err * 100:+.2f}")
    everything = [e for errs in by_source.values() for e in errs]
    text = [
        "# Held-out check: published multi-node A100 runs",
        "",
        f"- command: `python benchmarks/published_multinode.py --out {args.out}` ({datetime.date.today().isoformat()})",
        f"- constants: the committed `{CLUSTER}` preset (fitted on the single-node data only, see summary.md); "
        "nothing here was fitted on these runs",
        "- sources and per-run assumptions: pptune/calibrate/published_runs.py (vTrain ground_truth_multi.csv, "
        "Korthikanti et al. MLSys'23 Table 4 via Calculon, Megatron-LM SC'21 Table 1, MT-NLG 530B via llm-analysis, "
        "BLOOM-176B chronicles)",
        "- SC'21 Table 1 gives TFLOP/s per GPU, not time: measured s = the paper's FLOPs (Eq. 3) / (TFLOP/s x GPUs); "
        "it does not state micro-batch size or interleaving, so pptune picks its fastest feasible ones; 2021 Megatron "
        "all-reduced gradients after the backward, so the whole all-reduce is exposed (pptune's own all-reduce model)",
        "- anchors: Calculon 3.65% mean / 8.87% max on the Korthikanti runs; vTrain 14.73% on its multi-node runs",
        "",
        "## Errors (predicted / measured - 1)",
        "",
        *[f"- {source}: {_stats(errs)}" for source, errs in by_source.items()],
        f"- all: {_stats(everything)}",
        f"- of which tensor parallelism across nodes (tp 16 on 8-GPU nodes): {_stats(across)}" if across else
        "- no run has tensor parallelism across nodes",
        "",
        "## Same pipeline, different software",
        "",
        "Korthikanti et al. (2022 Megatron), SC'21 (2021 Megatron) and MT-NLG (2021 Megatron-DeepSpeed) trained the "
        "530B model with the same tp 8 x pp 35 pipeline at micro-batch 1, and the 1T model with the same tp 8 x pp 64. "
        "Per pipeline slot (one micro-batch's forward + backward on a stage, bubble and exposed data-parallel time "
        "removed), the 2021 software was slower on the same hardware: Megatron-LM by 2-15% (the interleaving SC'21 used "
        "is not stated) and Megatron-DeepSpeed by 30%. pptune, whose constants come from recent "
        "Megatron-DeepSpeed, predicts the 2022 runs within 4% and so cannot also match the 2021 ones without a "
        "per-software constant (which it does not fit on held-out runs).",
        "",
        "| model | software | dp | micro-batches per pipeline | interleaving | measured s | ms per slot | vs 2022 |",
        "|---|---|---|---|---|---|---|---|",
        *same_pipeline_lines(),
        "",
        "## Runs",
        "",
        "| source | run | GPUs | configuration | measured s | predicted s | error | predicted model TFLOP/s/GPU |",
        "|---|---|---|---|---|---|---|---|",
        *lines,
        "",
    ]
    out = Path(args.out)
    write_text(out / "multinode.md", "\n".join(text))
    write_text(out / "multinode.csv", "\n".join(csv_lines) + "\n")
    for source, errs in by_source.items():
        print(f"{source:12s} {_stats(errs)}")
    print(f"{'all':12s} {_stats(everything)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
