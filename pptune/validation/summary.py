"""summary.md of a local validation: how it was made, on what, and how well the model predicted the runs."""

from __future__ import annotations

import datetime

from pptune.validation.grid import correctness_only
from pptune.validation.host_speed import MATMULS
from pptune.validation.local import RANKS, LocalValidation
from pptune.validation.report import (
    BUBBLE_FILE,
    CALIBRATED_SCATTER_FILE,
    CSV_FILE,
    SCATTER_FILE,
    TARGETS,
    UNCALIBRATED_MEDIAN_TARGET,
    accuracy_lines,
    cpu_model,
)

# Published end-to-end step-time errors of other planners/simulators (docs/REFERENCE.md §6), for scale.
PUBLISHED = "Calculon 3.65% mean / 8.87% max (Megatron A100 runs), vTrain 8.37% (one 8xA100 node), Proteus 3.0% mean"


def _f(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def _host_speed_lines(result: LocalValidation) -> list[str]:
    before, after = result.profile_host_ms
    ratios = [r.host_ratio for r in result.records if r.host_ratio is not None]
    if before is None and after is None:
        return []
    return [f"- host speed (`pptune.validation.host_speed`: {MATMULS} single-thread matmuls in 2 pinned processes): "
            f"{_f(before, '.1f')} ms before and {_f(after, '.1f')} ms after the profile (the faster is the reference); "
            + (f"the kept runs at x{min(ratios):.2f} to x{max(ratios):.2f} of it (a run off by more than "
               f"{result.settings.max_host_drift:.0%} was repeated like a disturbed one)" if ratios else "no run probed")]


def summary_markdown(result: LocalValidation, *, command: str | None) -> str:
    s, p, c = result.settings, result.profile, result.cluster
    probe = c.calibration.get("probe", {})
    engine = c.calibration.get("engine_step")
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    loads = [r.load_average for r in result.records if r.load_average is not None]
    foreign = [r.foreign_share for r in result.records if r.foreign_share is not None]
    lines = [
        "# Local validation: predicted vs measured step time",
        "",
        f"- command: `{command}`" if command else "- command: (library call)",
        f"- machine: {cpu_model()}; each rank runs with 1 torch thread",
        f"- date: {date}; wall time {result.seconds / 60:.1f} min",
        f"- host load (1-min average): {_f(result.load_start, '.2f')} at start, {_f(result.load_end, '.2f')} at end; "
        + (f"before each run {min(loads):.2f} to {max(loads):.2f}" if loads else "no run")
        + (f"; other processes took {min(foreign):.0%} to {max(foreign):.0%} of the machine during the kept runs "
           f"(a run above {s.max_foreign:.0%} was repeated up to {s.retries} times, the least disturbed kept)"
           if foreign else ""),
        *_host_speed_lines(result),
        f"- model: `{s.model}`, fp32, global batch {s.global_batch_size} samples per step for every configuration",
        f"- profile: `{result.profile_label}` ({p.threads} thread(s) per process, {s.profile_copies} concurrent "
        f"process(es), {s.profile_passes if s.profile_copies > 1 else 1} pass(es), micro-batch sizes "
        f"{list(p.micro_batch_sizes)}, {s.profile_warmup} warm-up + {s.profile_repeat} timed iterations per layer)",
        *([f"- tp > 1 rows: a profile of one rank at {', '.join(f'tp {k}' for k in sorted(result.tp_profiles))} "
           "(`pptune profile --tp`: pptune's tp layers with their collectives left out, timed the same way), the cost "
           "model pricing the collectives"] if result.tp_profiles else []),
        (f"- links (probed, gloo): latency {c.intra_node_latency_us:.0f} us (p2p fit), "
         + (f"{c.intra_node_collective_latency_us:.0f} us per collective ring step (all-reduce after compute), "
            if c.intra_node_collective_latency_us is not None else "")
         + "bandwidth "
         f"{c.intra_node_gbps:.2f} GB/s (all-reduce bus bandwidth, the lower of back to back "
         f"{probe.get('allreduce_bus_gbps', 0):.2f} and after compute "
         f"{_f(probe.get('allreduce_after_compute_bus_gbps'), '.2f') or '-'}; p2p reached {probe.get('p2p_gbps', 0):.2f} GB/s)"
         if probe else f"- links: {c.intra_node_gbps:.2f} GB/s, {c.intra_node_latency_us:.0f} us (`{c.name}`)"),
        *([f"- engine step work (probed): {engine['step_ms']:.1f} ms for {engine['parameters']:,} parameters in "
           f"{engine.get('copies', 1)} concurrent process(es) -> memory_efficiency {c.gpu.memory_efficiency:.3f} of "
           f"{c.gpu.hbm_gbps:g} GB/s for the optimizer term"] if engine else []),
        f"- runs: {s.warmup} warm-up + {s.steps} timed steps each, median step time, DeepSpeed pipeline engine on "
        "2 gloo ranks (torchrun), each rank pinned to its own core",
        "",
    ]
    for title, acc, median in (
            ("Uncalibrated (profile + probed links; no fitted constant)", result.before, UNCALIBRATED_MEDIAN_TARGET),
            ("Uncalibrated, at the profile's host speed (each prediction x its run's host-speed ratio; nothing fitted)",
             result.at_profile_speed, UNCALIBRATED_MEDIAN_TARGET),
            ("Calibrated, leave-one-out (each run predicted by a fit to the other runs)", result.after,
             TARGETS["median_abs_error"])):
        if acc is None:
            continue
        lines += [f"## {title}", "", "| figure | value | target | |", "|---|---|---|---|",
                  *accuracy_lines(acc, median_target=median), ""]
    if result.fit_all is not None:
        k = result.fit_all.constants
        lines += [
            "## Constants fitted on all runs (`calibrated_cluster.json`)", "",
            f"compute scale {k.compute_scale:.3f}, per-micro-batch overhead {k.per_microbatch_overhead_ms:.2f} ms, "
            f"per-step overhead {k.per_step_overhead_ms:.1f} ms, link latency x{k.latency_multiple:g}, "
            f"bandwidth x{k.bandwidth_multiple:g} of the probed figures.", "",
        ]
    lines += ["## Runs", "",
              "| configuration | boundaries | predicted ms | measured ms (min-max) | error | calibrated ms | error | "
              "idle pred / meas | other processes (runs) | host speed |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    calibrated = result.calibrated_ms or (None,) * len(result.records)
    for r, cal in zip(result.records, calibrated, strict=True):
        if not r.ok:
            lines.append(f"| {r.label} | {list(r.boundaries)} | {r.predicted_ms:.0f} | failed: {r.failure} | | | | | | |")
            continue
        cal_err = None if cal is None else (cal - r.measured_ms) / r.measured_ms  # type: ignore[operator]
        note = f" ({r.config.world_size} processes on {RANKS} cores: correctness only, not scored)" \
            if correctness_only(r.config, ranks=RANKS) else ""
        lines.append(
            f"| {r.label}{note} | {list(r.boundaries)} | {r.predicted_ms:.0f} | {r.measured_ms:.0f} "
            f"({r.measured_min_ms:.0f}-{r.measured_max_ms:.0f}) | {r.error:+.1%} | {_f(cal, '.0f')} | "
            f"{_f(cal_err, '+.1%')} | {r.predicted_idle:.2f} / {_f(r.measured_idle, '.2f')} | "
            f"{_f(r.foreign_share, '.0%')} ({r.attempts}) | {_f(r.host_ratio, '.2f')} |")
    lines += [
        "",
        "## Files", "",
        f"- `{CSV_FILE}`: one row per configuration (predicted, measured, errors, breakdown, measured instruction timers)",
        f"- `{SCATTER_FILE}`: predicted vs measured, uncalibrated",
        *( [f"- `{CALIBRATED_SCATTER_FILE}`: predicted vs measured, calibrated leave-one-out"]
           if result.calibrated_ms is not None else []),
        f"- `{BUBBLE_FILE}`: idle share of the step vs micro-batches per step, predicted and measured",
        "- `runs/<configuration>/`: each plan directory with its `measured.json`",
        "",
        f"![predicted vs measured]({SCATTER_FILE})",
        "",
        *( [f"![calibrated]({CALIBRATED_SCATTER_FILE})", ""] if result.calibrated_ms is not None else []),
        f"![idle share]({BUBBLE_FILE})",
        "",
        f"For scale, published planners report: {PUBLISHED}.",
        "",
    ]
    return "\n".join(lines)
