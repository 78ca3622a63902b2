"""``pptune calibrate MEASURED... --cluster C -o cluster.json`` or ``pptune calibrate --runs FILE... -o cluster.json``.

Fit the cost model's free constants to real runs: pptune's own measured plan directories (``local_fit``), or the
user's runs as a JSONL of ``estimate --batch`` lines with measurements and Megatron / DeepSpeed training logs
(``runs_fit``).
"""

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
    p.add_argument("measured", nargs="*", metavar="MEASURED", help="measured plan directories (or their measured.json)")
    p.add_argument("--runs", nargs="+", metavar="FILE",
                   help="instead of MEASURED: JSONL files of runs (one per line: the keys of 'pptune estimate --batch' "
                        "plus measured_step_ms, optionally measured_peak_memory_gib and label) and/or training logs "
                        "of Megatron-LM, Megatron-DeepSpeed or DeepSpeed (one run each; configuration from Megatron's "
                        "logged arguments block, the options below filling in or overriding it). Fits compute efficiency, inter- and intra-node bus "
                        "efficiency and the per-micro-batch overhead, those the runs identify")
    p.add_argument("--cluster", help="the cluster the runs ran on (preset or JSON); required with MEASURED; with "
                                     "--runs the default of lines that name none, and the cluster written")
    p.add_argument("-o", "--output", required=True, help="calibrated cluster JSON to write")
    p.add_argument("--profile", default=None, help="profile JSON for every run (default: the one plan.json names)")
    p.add_argument("--no-scale", action="store_true", help="keep the compute scale at 1 (fit overheads and links only)")
    p.add_argument("--no-links", action="store_true", help="keep the cluster's link latency and bandwidth")
    p.add_argument("--fix", action="append", default=[], metavar="CONSTANT",
                   help="with --runs: keep this constant at the cluster's value (repeatable): compute_efficiency, "
                        "inter_node_efficiency, per_microbatch_overhead_ms, intra_node_efficiency")
    g = p.add_argument_group("configuration of --runs lines and logs that do not state it (as in pptune estimate)")
    g.add_argument("--model", help="model preset, spec string or profile .json")
    for flag, kind in _CONFIG_FLAGS:
        g.add_argument(flag, type=kind, default=None)
    g.add_argument("--sequence-parallel", action="store_const", const=True, default=None)
    from pptune.commands.estimate import add_knob_arguments

    add_knob_arguments(g)
    p.set_defaults(run=run)


_CONFIG_FLAGS = (("--gpus", int), ("--tp", int), ("--cp", int), ("--pp", int), ("--dp", int), ("--micro-batch-size", int),
                 ("--global-batch-size", int), ("--schedule", str), ("--vpp", int), ("--zero", int),
                 ("--recompute", str), ("--partition", str), ("--dtype", str), ("--target", str))


def run(args: argparse.Namespace) -> int:
    from pptune.errors import ConfigError

    if args.runs:
        if args.measured:
            raise ConfigError("give measured plan directories or --runs FILE, not both")
        return _run_runs(args)
    if not args.measured:
        raise ConfigError("nothing to calibrate: give measured plan directories or --runs FILE")
    if not args.cluster:
        raise ConfigError("--cluster is required with measured plan directories (the cluster they ran on)")
    return _run_plan_dirs(args)


def _run_plan_dirs(args: argparse.Namespace) -> int:
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


def batch_defaults() -> dict:
    """Every batch key's default as ``pptune estimate`` has it (its parser is the one place they are set)."""
    from pptune.batch_lines import defaults_of
    from pptune.commands import estimate

    parser = argparse.ArgumentParser()
    estimate.add_parser(parser.add_subparsers(dest="command"), "estimate")
    return defaults_of(parser.parse_args(["estimate"]))


def _load_runs(args: argparse.Namespace) -> list:
    """The runs of every --runs file: JSONL lines, or one run per training log."""
    from pptune.batch_lines import defaults_of
    from pptune.calibrate.runs_file import is_runs_file, load_runs_file, make_run, read_text
    from pptune.calibrate.train_logs import configuration, parse_log

    base = batch_defaults()
    given = {key: value for key, value in defaults_of(args).items() if value is not None}
    runs = []
    for path in args.runs:
        text = read_text(path)
        if is_runs_file(text):
            runs += load_runs_file(path, {**base, **given}, text)
            continue
        log = parse_log(text, origin=path, global_batch_size=given.get("global_batch_size"))
        logged = configuration(log.arguments)
        runs.append(make_run({**base, **logged, **given}, label=path, step_ms=log.step_ms,
                             peak_gib=log.peak_memory_gib, origin=path))
        print(f"{path}: {log.step_ms:.1f} ms per step (median of {log.iterations} {log.source} figures); "
              f"configuration from {'the logged arguments and ' if logged else ''}the command line")
    return runs


def _run_runs(args: argparse.Namespace) -> int:
    import datetime
    import statistics

    from pptune.calibrate.runs_fit import (
        CONSTANTS,
        MIN_RUNS,
        apply_constants,
        fit_runs,
        leave_one_out,
        predict_run,
        start_values,
    )
    from pptune.errors import ConfigError
    from pptune.fileio import check_output_path, write_json_atomic
    from pptune.hardware import load_cluster

    check_output_path(args.output, kind="file", flag="-o")
    unknown = sorted(set(args.fix) - set(CONSTANTS))
    if unknown:
        raise ConfigError(f"--fix {unknown[0]}: unknown constant; choose from {', '.join(CONSTANTS)}")
    runs = _load_runs(args)
    if len(runs) < MIN_RUNS:
        raise ConfigError(f"calibration needs at least {MIN_RUNS} runs (one to fit and one to check it), got "
                          f"{len(runs)}")
    if args.cluster:
        base = load_cluster(args.cluster)
    else:
        base = runs[0].cluster
        if any(r.cluster != base for r in runs):
            raise ConfigError("the runs name different clusters: give --cluster for the one to calibrate and write")
    options = {"start": start_values(base), "fixed": tuple(args.fix)}
    fit = fit_runs(runs, **options)
    held_out = leave_one_out(runs, **options)
    before = list(fit.errors_before)
    cluster = apply_constants(base, fit.values)
    cluster = cluster.replace(calibration={**cluster.calibration, "runs_fit": {
        "command": getattr(args, "command_line", None),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": "bounded Levenberg-Marquardt, maximum a posteriori on relative step-time errors "
                  "(pptune/calibrate/runs_fit.py)",
        "constants": fit.values, "fitted": list(fit.fitted), "fixed": fit.fixed,
        "runs": [r.label for r in runs], "errors_before": before, "errors_in_sample": list(fit.errors_after),
        "errors_leave_one_out": held_out,
    }})
    print(f"{len(runs)} runs: {fit.describe()}")
    memory = any(r.measured_peak_memory_gib for r in runs)
    print(f"{'run':<48}{'measured ms':>12}{'before':>9}{'held-out':>10}" + ("  peak GiB measured/predicted" if memory else ""))
    for r, b, h in zip(runs, before, held_out, strict=True):
        line = f"{r.label[:47]:<48}{r.measured_step_ms:>12.1f}{b:>+9.1%}" + (f"{h:>+10.1%}" if h is not None else f"{'n/a':>10}")
        if r.measured_peak_memory_gib:
            line += f"  {r.measured_peak_memory_gib:.1f}/{predict_run(r, fit.values).peak_memory_bytes / 2**30:.1f}"
        print(line)
    shown = [abs(h) for h in held_out if h is not None]
    print(f"median |error|: before {statistics.median(abs(e) for e in before):.1%}, held-out "
          + (f"{statistics.median(shown):.1%}" if shown else "n/a")
          + " (leave-one-out: each run predicted by a fit to the others)")
    # A node type, not a size (no num_nodes): like a preset, --cluster then sizes it to each job.
    write_json_atomic(args.output, {k: v for k, v in cluster.to_dict().items() if k != "num_nodes"})
    print(f"wrote {args.output}")
    return 0
