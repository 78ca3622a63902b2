"""Worker for tests/runtime/test_tensor_parallel.py: train plans through pptune's runtime, save losses and gradients.

Run under torchrun: ``python -m torch.distributed.run ... -m pptune.testing.ds_workers.tp_check STEPS OUT PLAN...``.
Each plan whose world size is this launch's is built and trained in turn (pipeline or plain engine), exactly as ``pptune.runtime.train``
builds it (``build_module``, ``initialize``, the same model seed and synthetic tokens), for STEPS optimizer
steps. Each rank writes ``OUT/<plan dir name>/rank<R>.pt``: the step losses, (pipeline engine) every parameter's
gradient at the first optimizer step (after DeepSpeed's data-parallel and tied-weight reductions, before the update), and for
split parameters the slice of the full parameter they hold (``pptune_shard``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from pptune.runtime.build import DATA_SEED, build_module, data_parallel_rank, initialize, synthetic_batches, train_step
from pptune.runtime.distributed import init_distributed, teardown
from pptune.runtime.plan_files import load_run_plan
from pptune.runtime.train import MODEL_SEED

GRAD_NORM = "grad_norm"  # key of the record; not a parameter name


def _snapshot_grads_at_first_step(engine: Any, store: dict[str, Any]) -> None:
    """Wrap this engine's OptimizerStep instruction (an instance copy of ``_INSTRUCTION_MAP``) to copy the grads.

    Also records DeepSpeed's global gradient norm as its fp32 engine computes it for clipping
    (``deepspeed.runtime.utils.clip_grad_norm_`` with the engine's mpu; an infinite max_norm scales by 1).
    """
    from deepspeed.runtime.utils import clip_grad_norm_

    table = dict(type(engine)._INSTRUCTION_MAP)
    (step_cls,) = [cls for cls in table if cls.__name__ == "OptimizerStep"]
    step_fn = table[step_cls]

    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not store:
            for name, p in self.module.named_parameters():
                store[name] = (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
            store[GRAD_NORM] = float(clip_grad_norm_(self.module.parameters(), max_norm=float("inf"), mpu=self.mpu))
        return step_fn(self, *args, **kwargs)

    table[step_cls] = step
    engine._INSTRUCTION_MAP = table


def run_plan(plan_dir: Path, steps: int, out_dir: Path) -> None:
    import torch.distributed as dist

    plan = load_run_plan(plan_dir)
    torch.manual_seed(MODEL_SEED)
    module, vocab = build_module(plan)
    engine = initialize(plan, module, ds_timers=False)
    grads: dict[str, Any] = {}
    if plan.engine == "pipeline":  # the plain engine (ZeRO 2/3) keeps partitioned gradients: losses only
        _snapshot_grads_at_first_step(engine, grads)
    data = synthetic_batches(vocab_size=vocab, micro_batch_size=plan.micro_batch_size, seq_len=plan.seq_len,
                             seed=DATA_SEED + data_parallel_rank(engine))
    losses = [float(train_step(engine, plan, data)) for _ in range(steps)]
    grid = engine.mpu  # DeepSpeed's PipelineParallelGrid (the module's own, or the plain engine's at tp > 1)
    shards = {name: getattr(p, "pptune_shard", None) for name, p in engine.module.named_parameters()}
    norm = grads.pop(GRAD_NORM, None)
    record = {"losses": losses, "grads": grads, "grad_norm": norm, "shards": shards, "engine": plan.engine,
              "stage": grid.get_stage_id() if grid is not None else 0,
              "tp_rank": grid.get_slice_parallel_rank() if grid is not None else 0,
              "pipe_partitioned": bool(getattr(engine, "is_pipe_partitioned", False)),
              "grad_partitioned": bool(getattr(engine, "is_grad_partitioned", False))}
    target = out_dir / plan_dir.name
    target.mkdir(parents=True, exist_ok=True)
    torch.save(record, target / f"rank{dist.get_rank()}.pt")
    dist.barrier()


def main(argv: list[str]) -> None:
    import torch.distributed as dist

    steps, out_dir, plans = int(argv[0]), Path(argv[1]), [Path(p) for p in argv[2:]]
    torch.set_num_threads(1)
    init_distributed()
    for plan_dir in plans:
        if load_run_plan(plan_dir).world_size == dist.get_world_size():
            run_plan(plan_dir, steps, out_dir)
    teardown()


if __name__ == "__main__":
    main(sys.argv[1:])
