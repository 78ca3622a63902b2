"""Worker for tests/runtime/test_pipeline_module.py: builds pipeline modules, writes what each rank built.

Run under torchrun: ``python -m torch.distributed.run ... -m pptune.testing.ds_workers.pipeline_build OUT_DIR``.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch
from deepspeed.pipe import PipelineModule

from pptune.model.layers import build_layer_specs
from pptune.model.spec import TransformerSpec
from pptune.runtime.distributed import init_distributed, teardown
from pptune.runtime.pipeline import ExplicitPipelineModule

TINY = TransformerSpec(name="tiny", num_layers=4, hidden_size=64, num_heads=2, ffn_hidden_size=256, vocab_size=128,
                       seq_len=32)
EXPLICIT = [0, 1, 6]


def _kind(func: object) -> str:
    if isinstance(func, functools.partial):
        return func.func.__name__
    return type(func).__name__


def describe(module: PipelineModule) -> dict:
    return {
        "parts": [int(p) for p in module.parts],
        "local_start": int(module._local_start),
        "local_stop": int(module._local_stop),
        "kinds": [_kind(f) for f in module.forward_funcs],
        "param_count": sum(p.numel() for p in module.parameters()),
    }


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    init_distributed()
    import torch.distributed as dist

    rank = dist.get_rank()
    explicit = ExplicitPipelineModule(build_layer_specs(TINY), boundaries=EXPLICIT, num_stages=2)
    parameters = PipelineModule(build_layer_specs(TINY), num_stages=2, partition_method="parameters")
    result = {"rank": rank, "explicit": describe(explicit), "parameters": describe(parameters)}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    teardown()


if __name__ == "__main__":
    main(sys.argv[1])
