"""Fixtures for the emit tests: DeepSpeed's process group in this process (to validate configs at a real dp)."""

from __future__ import annotations

import os
import socket

import pytest

SHM_COMM_OP = "deepspeed_shm_comm"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ds_dist(tmp_path_factory):
    """``deepspeed.init_distributed`` with gloo in one process (RANK 0 of WORLD_SIZE 1).

    DeepSpeedConfig reads the data-parallel size from ``mpu`` only after ``dist.get_rank()`` succeeds, so the
    backend must be up. Without help, ``init_distributed`` JIT-compiles ``deepspeed_shm_comm`` (~60 s on a cold
    cache, docs/REFERENCE.md §2): like pptune.runtime.distributed, we mark that inference-only op incompatible so
    ``build_shm_op`` returns None, and point TORCH_EXTENSIONS_DIR at an empty directory to prove nothing was built.
    """
    import deepspeed
    import deepspeed.comm.comm as ds_comm
    import torch.distributed as dist

    if dist.is_initialized():  # someone else's group: use it, leave it alone
        yield None
        return
    ext = tmp_path_factory.mktemp("torch_extensions")
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0", "TORCH_EXTENSIONS_DIR": str(ext)}
    saved_env = {k: os.environ.get(k) for k in env}
    ops = deepspeed.ops.__compatible_ops__
    saved_op = ops.get(SHM_COMM_OP)
    os.environ.update(env)
    ops[SHM_COMM_OP] = False
    try:
        deepspeed.init_distributed(dist_backend="gloo", verbose=False)
        yield ext
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        ds_comm.cdb = None
        if saved_op is None:
            ops.pop(SHM_COMM_OP, None)
        else:
            ops[SHM_COMM_OP] = saved_op
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
