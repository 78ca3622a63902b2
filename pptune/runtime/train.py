"""Train a plan with real DeepSpeed and record step times: ``python -m pptune.runtime.train PLAN_DIR``.

Run it under a launcher (``torchrun --nproc_per_node N`` or ``deepspeed``; ``pptune measure`` does it), with N equal
to the plan's world size. Every rank builds its stage, trains ``--warmup`` untimed steps and ``--steps`` timed ones on
synthetic tokens; each step is timed barrier to barrier on rank 0's clock (so it covers the slowest rank), and
every pipeline instruction (and, with ``--ds-timers``, DeepSpeed's own timers) is timed per step. Rank 0 writes
``measured.json`` atomically.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from pptune.errors import ConfigError, PptuneError
from pptune.fileio import cpu_name
from pptune.runtime.measured import MEASURED_FILE, Measured, RankRecord, save_measured, stage_records
from pptune.runtime.memory_probe import MemoryProbe, estimated_memory_parts
from pptune.runtime.plan_files import RunPlan, load_run_plan

MODEL_SEED = 0  # every run of a plan starts from the same weights


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pptune.runtime.train", description=__doc__.splitlines()[0])
    p.add_argument("plan_dir", type=Path, help="plan directory (pipeline.json, ds_config.json)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--out", type=Path, default=None, help="measured.json path (default PLAN_DIR/measured.json)")
    p.add_argument("--ds-timers", action="store_true",
                   help="also record DeepSpeed's own timers (turns on wall_clock_breakdown)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")
    return args


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else cpu_name()


def _rank_record(engine: Any, plan: RunPlan, timers: dict, memory: MemoryProbe) -> dict:
    """What this rank built and timed, as a plain dict (sent to rank 0 with all_gather_object)."""
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    module = engine.module
    rank = dist.get_rank()
    if plan.engine == "pipeline":
        coord = module._topo.get_coord(module.global_rank)
        stage, dp_rank = coord.pipe, coord.data
        start, stop, built = int(module._local_start), int(module._local_stop), len(module.forward_funcs)
        parts = [int(p) for p in module.parts]
    else:
        stage, dp_rank, built = 0, rank, len(module.layers)
        start, stop, parts = 0, built, [0, built]
    record = RankRecord(
        rank=rank, stage=int(stage), dp_rank=int(dp_rank), layer_start=start, layer_stop=stop, num_forward_funcs=built,
        param_count=sum(p.numel() for p in module.parameters()),
        peak_memory_bytes=int(get_accelerator().max_memory_allocated()), timers=timers, **memory.record_fields(),
    )
    return {"record": record, "parts": parts}


def _optimizer_name(optimizer: Any) -> str:
    """The optimizer class DeepSpeed built, with the wrapped one when it wraps (``BF16_Optimizer(AdamW)``)."""
    if optimizer is None:
        return "none"
    inner = getattr(optimizer, "optimizer", None)
    outer = type(optimizer).__name__
    return f"{outer}({type(inner).__name__})" if inner is not None and inner is not optimizer else outer


def _timed_steps(engine: Any, plan: RunPlan, args: argparse.Namespace, step_timers: Any, *, vocab_size: int,
                 memory: MemoryProbe) -> tuple[list[float], float]:
    """Warm-up, then the timed steps; returns rank 0's step times (ms) and the last loss."""
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    from pptune.runtime.build import DATA_SEED, data_parallel_rank, synthetic_batches, train_step

    accel = get_accelerator()
    data = synthetic_batches(vocab_size=vocab_size, micro_batch_size=plan.micro_batch_size, seq_len=plan.seq_len,
                             seed=DATA_SEED + data_parallel_rank(engine))  # per replica; its tp ranks alike
    times_ms: list[float] = []
    loss = math.nan
    for step in range(args.warmup + args.steps):
        accel.synchronize()
        dist.barrier()
        start = time.perf_counter()
        loss_t = train_step(engine, plan, data)
        accel.synchronize()
        dist.barrier()  # the step ends when the slowest rank is done
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        loss = float(loss_t)
        memory.step_done()
        if step < args.warmup:
            step_timers.discard()
        else:
            step_timers.record_step()
            times_ms.append(elapsed_ms)
        if dist.get_rank() == 0:
            kind = "warm-up" if step < args.warmup else "timed"
            print(f"pptune step {step + 1}/{args.warmup + args.steps} ({kind}): {elapsed_ms:.1f} ms, loss {loss:.4f}",
                  flush=True)
    return times_ms, loss


def run(args: argparse.Namespace) -> Path | None:
    """Build, train and measure; returns the measured.json path on rank 0 (None on other ranks)."""
    import deepspeed
    import torch
    import torch.distributed as dist

    from pptune.runtime.build import build_module, initialize
    from pptune.runtime.distributed import init_distributed, teardown
    from pptune.runtime.timers import InstructionTimers, StepTimers, enable_deepspeed_timers

    plan = load_run_plan(args.plan_dir)
    device = init_distributed()
    if device == "cpu":
        torch.set_num_threads(1)  # ranks share the cores; more threads make them fight (docs/REFERENCE.md §2)
        _pin_to_own_core()
    world = dist.get_world_size()
    if world != plan.world_size:
        raise ConfigError(f"world size {world} != plan's pp {plan.pp} * tp {plan.tp} * dp {plan.dp} = {plan.world_size}")
    memory = MemoryProbe(device).start()  # before the model exists: its weights are live tensors too
    torch.manual_seed(MODEL_SEED)
    module, vocab_size = build_module(plan)
    engine = initialize(plan, module, ds_timers=args.ds_timers)
    sources: list[Any] = [InstructionTimers(engine, cuda=device == "cuda")]
    ds_timers = enable_deepspeed_timers(engine)
    if ds_timers is not None:
        sources.append(ds_timers)
    step_timers = StepTimers(sources)
    times_ms, loss = _timed_steps(engine, plan, args, step_timers, vocab_size=vocab_size, memory=memory)
    mine = _rank_record(engine, plan, step_timers.stats(), memory)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    out = None
    if dist.get_rank() == 0:
        ranks = tuple(g["record"] for g in gathered)
        measured = Measured(
            plan_dir=str(plan.plan_dir), model=plan.model_name, seq_len=plan.seq_len, pp=plan.pp, dp=plan.dp,
            tp=plan.tp, world_size=world, partition_method=plan.partition_method,
            boundaries=tuple(gathered[0]["parts"]), planned_boundaries=plan.boundaries,
            micro_batch_size=plan.micro_batch_size, num_microbatches=plan.num_microbatches,
            train_batch_size=plan.micro_batch_size * plan.num_microbatches * plan.dp, dtype=plan.dtype,
            zero_stage=plan.zero_stage, activation_checkpoint_interval=plan.activation_checkpoint_interval,
            optimizer=_optimizer_name(engine.optimizer),
            warmup=args.warmup, step_times_ms=tuple(times_ms), final_loss=loss if math.isfinite(loss) else None,
            deepspeed_timers=ds_timers is not None, ranks=ranks,
            stages=stage_records(ranks, estimated_memory_parts(plan.plan_dir)),
            device=device, device_name=_device_name(device), threads=torch.get_num_threads() if device == "cpu" else None,
            torch_version=torch.__version__, deepspeed_version=deepspeed.__version__,
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            command=shlex.join(["python", "-m", "pptune.runtime.train", *sys.argv[1:]]),
        )
        out = save_measured(measured, args.out or plan.plan_dir / MEASURED_FILE)
        print(f"pptune: wrote {out} (median step {measured.median_step_ms:.1f} ms)", flush=True)
    teardown()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not _cuda_available() else "cuda")
    try:
        run(args)
    except PptuneError as exc:
        # One line the launcher can quote; the non-zero exit makes torchrun stop the other ranks.
        print(f"pptune error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _pin_to_own_core() -> None:
    """Pin this rank to one CPU of its own when the local ranks fit (one core each, as they run one thread).

    Unpinned, the scheduler sometimes puts two busy ranks on one core for a while (the launcher and other
    processes wake up beside them), and the pipeline waits for the one that lost its core: step times then
    jump between modes tens of percent apart. ``PPTUNE_PIN_CPU=0`` turns it off.
    """
    if os.environ.get("PPTUNE_PIN_CPU", "1") == "0" or not hasattr(os, "sched_setaffinity"):
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cpus = sorted(os.sched_getaffinity(0))
    if local_world <= len(cpus):
        os.sched_setaffinity(0, {cpus[local_rank]})


if __name__ == "__main__":
    from pptune.runtime.distributed import exit_process

    exit_process(main())
