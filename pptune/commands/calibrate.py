"""``pptune calibrate MEASURED... --cluster C -o cluster.json``: fit the cost model's free constants to real runs."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(
        name, help="fit overheads, link figures and a compute scale to measured runs; write a cluster JSON",
        description="Fit the cost model's free constants (per-micro-batch and per-step engine overhead, link latency "
                    "and bandwidth, a compute scale of the profile) to measured plan directories (plan.json + "
                    "measured.json, e.g. results/validation/local/runs/*) and write a cluster JSON that --cluster "
                    "accepts. Reports the error before and after calibration on runs each fit did not see "
                    "(leave-one-out: every run is predicted by a fit to all the others).",
    )
    p.add_argument("measured", nargs="+", metavar="MEASURED", help="measured plan directories (or their measured.json)")
    p.add_argument("--cluster", required=True, help="the cluster the runs were predicted with (preset or JSON)")
    p.add_argument("-o", "--output", required=True, help="calibrated cluster JSON to write")
    p.add_argument("--profile", default=None, help="profile JSON for every run (default: the one plan.json names)")
    p.add_argument("--no-scale", action="store_true", help="keep the compute scale at 1 (fit overheads and links only)")
    p.add_argument("--no-links", action="store_true", help="keep the cluster's link latency and bandwidth")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import datetime
    import statistics

    from pptune.calibrate.local_fit import fit_local, leave_one_out, predict_ms
    from pptune.calibrate.measured_runs import load_sample
    from pptune.fileio import check_output_path
    from pptune.hardware import load_cluster, save_cluster
    from pptune.profile.schema import load_profile

    check_output_path(args.output, kind="file", flag="-o")
    profile = load_profile(args.profile) if args.profile else None
    cache: dict = {}
    samples = [load_sample(path, profile=profile, profiles=cache) for path in args.measured]
    worlds = {s.config.world_size for s in samples}
    base = load_cluster(args.cluster, num_gpus=max(worlds))
    options = {"fit_scale": not args.no_scale, "fit_links": not args.no_links}
    before = [(predict_ms(s, base) - s.measured_ms) / s.measured_ms for s in samples]
    held_out = leave_one_out(samples, base, **options) if len(samples) >= 3 else None
    provenance = {
        "command": getattr(args, "command_line", None),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": "golden-section compute scale x NNLS overheads x link grid; least squares on relative errors",
        "runs": [str(p) for p in args.measured],
    }
    fit = fit_local(samples, base, provenance=provenance, **options)
    after = [(p - s.measured_ms) / s.measured_ms for p, s in zip(held_out, samples, strict=True)] if held_out else None
    if after is not None:
        fit = _with_errors(fit, before, after)
    save_cluster(fit.cluster, args.output)
    k = fit.constants
    print(f"fitted on {len(samples)} runs: compute scale {k.compute_scale:.3f}, per-micro-batch overhead "
          f"{k.per_microbatch_overhead_ms:.2f} ms, per-step overhead {k.per_step_overhead_ms:.1f} ms, "
          f"link latency x{k.latency_multiple:g}, bandwidth x{k.bandwidth_multiple:g}")
    from pptune.calibrate.local_fit import SCALE_BOUNDS

    if not args.no_scale and min(abs(k.compute_scale - b) for b in SCALE_BOUNDS) < 1e-3:
        print(f"warning: the compute scale hit its bound {k.compute_scale:.2f} (allowed {SCALE_BOUNDS}): the runs and "
              "the profile disagree by more than a scale can explain (a profile or runs disturbed by other work?)")
    print(f"{'run':<48}{'measured ms':>12}{'before':>9}" + (f"{'held-out':>10}" if after else f"{'in-sample':>11}"))
    shown = after if after is not None else list(fit.errors_after)
    for s, b, a in zip(samples, before, shown, strict=True):
        print(f"{s.label[:47]:<48}{s.measured_ms:>12.1f}{b:>+9.1%}{a:>+10.1%}")
    med = statistics.median
    print(f"median |error|: before {med(abs(e) for e in before):.1%}, after {med(abs(e) for e in shown):.1%} "
          + ("(leave-one-out: each run predicted by a fit to the others)" if after is not None else
             "(in-sample: fewer than 3 runs, no held-out error)"))
    print(f"wrote {args.output}")
    return 0


def _with_errors(fit, before: list[float], after: list[float]):
    """The fit with its leave-one-out errors recorded in the cluster's calibration provenance."""
    import dataclasses

    cal = dict(fit.cluster.calibration)
    cal["local_fit"] = {**cal["local_fit"], "errors_before": before, "errors_leave_one_out": after}
    return dataclasses.replace(fit, cluster=fit.cluster.replace(calibration=cal))
