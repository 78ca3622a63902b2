"""``pptune measure PLAN_DIR``: run a plan with real DeepSpeed on this machine and compare with its estimate."""

from __future__ import annotations

import argparse
from typing import Any

from pptune.runtime.timers import BACKWARD, FORWARD, OPTIMIZER, RECV, REDUCE, SEND


def add_parser(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(
        name, help="run a plan with real DeepSpeed and measure its step time",
        description="Launch PLAN_DIR (from 'pptune plan') with torchrun on this machine, train --warmup + --steps "
                    "steps on synthetic tokens, write PLAN_DIR/measured.json and compare with plan.json's estimate.",
    )
    p.add_argument("plan_dir", help="plan directory (pipeline.json, ds_config.json, plan.json)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the run is stopped (default 600)")
    p.add_argument("--nproc", type=int, default=None, help="processes (default: the plan's world size pp*tp*dp)")
    p.add_argument("--log", default=None, help="log file (default PLAN_DIR/measure.log)")
    p.add_argument("--ds-timers", action="store_true", help="also record DeepSpeed's wall_clock_breakdown timers")
    n = p.add_argument_group("several nodes (HOW_TO_RUN.md)")
    n.add_argument("--hostfile", default=None, help="DeepSpeed hostfile ('<host> slots=<n>' per line): one torchrun "
                   "agent per host, over ssh for other hosts (same paths on every node); node 0 = the first line")
    n.add_argument("--nnodes", type=int, default=None, help="run this node's agent only, of NNODES (once per node)")
    n.add_argument("--node-rank", type=int, default=None, help="this node's rank, 0..NNODES-1 (0 writes measured.json)")
    n.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT", help="node 0's address and a free port")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pptune.errors import ConfigError
    from pptune.runtime.launch import LOG_FILE, check_runnable, run_plan
    from pptune.runtime.nodes import check_world, read_hostfile, rendezvous_from
    from pptune.runtime.plan_files import load_run_plan

    if args.steps < 1 or args.warmup < 0 or args.timeout <= 0 or (args.nproc is not None and args.nproc < 1):
        raise ConfigError(f"need --steps >= 1, --warmup >= 0, --timeout > 0, --nproc >= 1; got {args.steps}, "
                          f"{args.warmup}, {args.timeout:g}, {args.nproc}")
    rendezvous = rendezvous_from(args.nnodes, args.node_rank, args.rdzv_endpoint)
    if args.hostfile is not None and (rendezvous is not None or args.nproc is not None):
        raise ConfigError("--hostfile sets the nodes and processes itself: give no --nproc or rendezvous with it")
    plan = load_run_plan(args.plan_dir)
    log = args.log or str(plan.plan_dir / LOG_FILE)
    check_runnable(plan, Path(log))  # before the line below: a refused plan prints nothing but its error
    if args.hostfile is not None:
        check_world(read_hostfile(args.hostfile), plan.world_size)
    print(f"measuring {plan.plan_dir}: {args.nproc or plan.world_size} processes, {args.warmup} warm-up + "
          f"{args.steps} timed steps (log: {log})", flush=True)
    measured = run_plan(plan.plan_dir, nproc=args.nproc, steps=args.steps, warmup=args.warmup,
                        timeout_s=args.timeout, log_path=log, ds_timers=args.ds_timers, rendezvous=rendezvous,
                        hostfile=args.hostfile)
    if measured is None:  # a node other than 0: rank 0 gathers every rank's timers into node 0's measured.json
        print(f"node {args.node_rank} of {args.nnodes} finished; node 0 writes {plan.plan_dir / 'measured.json'}")
        return 0
    for line in summary_lines(measured, plan.predicted_step_ms):
        print(line)
    print(f"wrote {plan.plan_dir / 'measured.json'}")
    return 0


def relative_error(predicted_ms: float, measured_ms: float) -> float:
    """(predicted - measured) / measured: positive when the plan over-predicts."""
    return (predicted_ms - measured_ms) / measured_ms


def _sum(timers: dict[str, float], names: tuple[str, ...]) -> float:
    return sum(timers.get(n, 0.0) for n in names)


def summary_lines(measured: Any, predicted_step_ms: float | None) -> list[str]:
    """The measure report: step time, prediction error, stages built and each stage's time per step."""
    m = measured
    steps = m.step_times_ms
    lines = [
        f"{m.model}: pp {m.pp} x dp {m.dp} x tp {m.tp}, micro-batch {m.micro_batch_size} x {m.num_microbatches}, "
        f"{m.dtype}, {m.device} ({m.device_name}), optimizer {m.optimizer}",
        f"step time: median {m.median_step_ms:.1f} ms (min {min(steps):.1f}, max {max(steps):.1f}, {len(steps)} steps), "
        f"{m.samples_per_s:.1f} samples/s",
    ]
    if predicted_step_ms is not None:
        err = relative_error(predicted_step_ms, m.median_step_ms)
        lines.append(f"predicted {predicted_step_ms:.1f} ms (plan.json): error {err:+.1%} (predicted - measured) / measured")
    else:
        lines.append("predicted: no estimate.step_time_ms in plan.json")
    planned = "" if m.planned_boundaries is None else f" (planned {list(m.planned_boundaries)})"
    lines.append(f"stages built: {list(m.boundaries)} by {m.partition_method}{planned}")
    if m.planned_boundaries is not None and tuple(m.planned_boundaries) != tuple(m.boundaries):
        lines.append("warning: DeepSpeed built other stages than planned; the estimate describes a different split")
    lines.append("per step, ms (mean over data-parallel ranks): stage layers   fwd     bwd     send    recv    reduce  optim")
    for s in m.stages:
        t = s.timers_ms
        lines.append(
            f"  {s.stage:>5} {s.layer_start:>3}-{s.layer_stop - 1:<3} {t.get(FORWARD, 0.0):7.1f} {t.get(BACKWARD, 0.0):7.1f} "
            f"{_sum(t, SEND):7.1f} {_sum(t, RECV):7.1f} {_sum(t, REDUCE):7.1f} {t.get(OPTIMIZER, 0.0):7.1f}"
        )
    return lines + memory_lines(m)


def memory_lines(measured: Any) -> list[str]:
    """Per stage, measured peak allocated (and CUDA reserved) memory beside the estimate's tensor parts."""
    from pptune.cost.memory import TENSOR_PARTS

    stages = [s for s in measured.stages if s.peak_allocated_bytes is not None]
    if not stages:
        return ["memory: not recorded in this measured.json (a run before pptune's memory probe)"]
    source = next((r.memory_source for r in measured.ranks if r.memory_source), "")
    lines = [f"memory per stage, MiB (largest rank; {source}): stage allocated reserved  predicted tensors  error"]
    for s in stages:
        reserved = "-" if s.peak_reserved_bytes is None else f"{s.peak_reserved_bytes / 2**20:.1f}"
        est = s.estimated_memory_parts_bytes
        tensors = None if est is None else sum(est.get(k, 0) for k in TENSOR_PARTS)  # an old plan's "reserve" not
        pred = "-" if tensors is None else f"{tensors / 2**20:.1f}"
        err = "-" if tensors is None else f"{(tensors - s.peak_allocated_bytes) / s.peak_allocated_bytes:+.1%}"
        lines.append(f"  {s.stage:>5} {s.peak_allocated_bytes / 2**20:9.1f} {reserved:>8} {pred:>18}  {err:>6}")
    return lines
