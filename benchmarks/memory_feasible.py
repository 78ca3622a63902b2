"""No configuration that ran is ranked infeasible (issue 17): pptune's memory model on every run that was measured.

Usage: ``python benchmarks/memory_feasible.py [--out results/validation/memory]`` (about a minute; no GPU).

Each run trained for real, so it fitted its GPUs; the memory model must say so. Checked here:
- the published multi-node runs of ``pptune.calibrate.published_runs`` (Korthikanti et al., Narayanan et al. SC'21,
  MT-NLG, BLOOM, vTrain's multi-node set), each as ``pptune.calibrate.multinode`` predicts it (``a100-80g``
  resized to the run, the run's stated knobs);
- the 1,440 single-node A100 runs of ``../shared/data/a100_megatron_single_node.csv`` as ``pptune validate
  --published`` predicts them (``pptune.calibrate.published``: fp16, full recompute, Megatron-DeepSpeed).
The A100s of these runs had 40 or 80 GB; the check uses 80 GB (the preset) and also lists every run whose peak
exceeds 40 GB, so a reader can see which runs would need the larger card.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pptune.calibrate.multinode import CLUSTER, predict, with_chosen_knobs
from pptune.calibrate.predict import DTYPE
from pptune.calibrate.published import load_published, row_config, row_spec
from pptune.calibrate.published_runs import bloom_run, korthikanti_runs, mtnlg_runs, sc21_runs, vtrain_runs
from pptune.cost.cache import CostCache
from pptune.cost.estimate import estimate
from pptune.fileio import write_text_atomic
from pptune.hardware import load_cluster
from pptune.profile.analytic import analytic_profile

GIB = 2**30
SINGLE_NODE = Path(__file__).resolve().parents[2] / "shared" / "data" / "a100_megatron_single_node.csv"


def published_rows() -> list[tuple[str, str, float, bool]]:
    """(source, name, peak GiB, feasible) of each published multi-node run, as ``multinode.main`` predicts it
    (vTrain's tp 16 runs included: tensor parallelism across nodes is priced since issue 18)."""
    out = []
    for run in korthikanti_runs() + sc21_runs() + mtnlg_runs() + [bloom_run()] + vtrain_runs():
        est = predict(with_chosen_knobs(run))
        # a source without micro-batch size / interleaving gets pptune's fastest feasible choice: feasible by
        # construction, marked so
        name = run.name if run.knobs_stated else f"{run.name} (mbs, v: pptune's choice)"
        out.append((run.source, name, est.peak_memory_bytes / GIB, bool(est.feasible)))
    return out


def single_node_rows(path: Path) -> list[tuple[str, float, bool]]:
    """(label, peak GiB, feasible) of each single-node run."""
    cache, profiles, out = CostCache(), {}, []
    base = load_cluster(CLUSTER)
    for row in load_published(path):
        spec = row_spec(row)
        key = (spec, row.tp, row.micro_batch)
        if key not in profiles:
            profiles[key] = analytic_profile(spec, base.gpu, tp=row.tp, dtype=DTYPE, micro_batch_sizes=(row.micro_batch,),
                                             flash_attention=False)
        config = row_config(row)
        est = estimate(profiles[key], load_cluster(base, num_gpus=row.gpus), config, cache=cache)
        label = f"h{row.hidden} l{row.layers} s{row.seq_len} {config.label()}"
        out.append((label, est.peak_memory_bytes / GIB, bool(est.feasible)))
    return out


def report(published: list, single: list, command: str) -> str:
    bad_pub = [r for r in published if not r[3]]
    bad_single = [r for r in single if not r[2]]
    over40 = [r for r in published if r[2] > 40] + [(None, *r) for r in single if r[1] > 40]
    lines = [
        "## Runs that trained are feasible (issue 17)", "",
        f"Command: `{command}`. Every run below trained on real A100s; pptune's memory model (`pptune/cost/memory.py`,",
        "80 GB preset, framework parts included) must not rank any of them infeasible.", "",
        f"- published multi-node runs (`pptune.calibrate.published_runs`): {len(published)}, ranked infeasible: "
        f"**{len(bad_pub)}**",
        f"- single-node runs (`../shared/data/a100_megatron_single_node.csv`): {len(single)}, ranked infeasible: "
        f"**{len(bad_single)}**",
        f"- runs whose predicted peak exceeds 40 GB (they needed the 80 GB A100): {len(over40)}",
        "",
        "| source | run | predicted peak GiB | feasible on 80 GB |", "|---|---|---:|---|",
    ]
    lines += [f"| {src} | {name} | {peak:.1f} | {'yes' if ok else '**no**'} |" for src, name, peak, ok in published]
    if bad_single:
        lines += ["", "Single-node runs ranked infeasible:", ""]
        lines += [f"- {label}: {peak:.1f} GiB" for label, peak, _ in bad_single]
    peaks = sorted(p for _, p, _ in single)
    lines += ["", f"Single-node predicted peaks: min {peaks[0]:.1f}, median {peaks[len(peaks) // 2]:.1f}, "
                  f"max {peaks[-1]:.1f} GiB."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results/validation/memory"))
    p.add_argument("--single-node", type=Path, default=SINGLE_NODE)
    args = p.parse_args(argv)
    published = published_rows()
    single = single_node_rows(args.single_node)
    command = shlex.join(["python", "benchmarks/memory_feasible.py", *(sys.argv[1:] if argv is None else argv)])
    text = report(published, single, command)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "feasible.md", text)
    print(text.split("\n\n| source")[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
