"""Process-group setup and teardown for pptune's DeepSpeed workers (launched by torchrun).

Why not just ``deepspeed.init_distributed()``: on the CPU accelerator DeepSpeed's ``TorchBackend`` JIT-compiles
the ``deepspeed_shm_comm`` op (about 60 s on 2 cores, from an empty ``TORCH_EXTENSIONS_DIR``) every time the
cache is cold (deepspeed/comm/torch.py ``build_shm_op``). That op serves only ``inference_all_reduce``; training
collectives go through ``torch.distributed``. ``build_shm_op`` skips the build when
``deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"]`` is False, a dict DeepSpeed caches on first access and
whose edits persist (deepspeed/ops/__init__.py), so we mark the op unavailable before initialising.
"""

from __future__ import annotations

import os
import sys

SHM_COMM_OP = "deepspeed_shm_comm"


def device_kind() -> str:
    """``"cuda"`` when DeepSpeed's accelerator is CUDA, else ``"cpu"``."""
    from deepspeed.accelerator import get_accelerator

    return "cuda" if get_accelerator().device_name() == "cuda" else "cpu"


def init_distributed(*, skip_shm_build: bool = True) -> str:
    """Initialise torch.distributed through DeepSpeed from torchrun's environment; return the device kind.

    Uses gloo on CPU and nccl on CUDA (docs/REFERENCE.md §2). On CUDA, binds this process to ``LOCAL_RANK``'s GPU.

    Args:
        skip_shm_build: on CPU, avoid JIT-compiling DeepSpeed's inference-only shared-memory all-reduce op.
    """
    import deepspeed
    import torch

    device = device_kind()
    if device == "cpu" and skip_shm_build:
        deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    return device


def teardown() -> None:
    """Barrier, then destroy the process group; without it rank 0 sometimes aborts at exit (docs/REFERENCE.md §2)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End a worker now with ``code``, skipping the C++ static destructors of interpreter exit.

    After a complete run (measured.json written, process group destroyed) a gloo rank on this CPU host sometimes
    still dies at exit with "terminate called without an active exception" (SIGABRT: a library thread left
    joinable at destruction; seen in a validate --local run, 2026-12-04), and torchrun then reports the finished
    run as failed. Everything the run produced is flushed and closed by then, so the worker leaves via os._exit.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
