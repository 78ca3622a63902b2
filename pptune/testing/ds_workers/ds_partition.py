"""Builds real DeepSpeed PipelineModules (4 gloo ranks on CPU) and writes each case's ``module.parts`` as JSON.

Run by tests/cost/test_partition_deepspeed.py as ``python -m pptune.testing.ds_workers.ds_partition OUT.json``. Each rank
builds the same modules (num_stages 2 with dp 2, and num_stages 4); rank 0 writes what DeepSpeed chose,
with the per-layer parameter counts and class names the test turns into a profile.

DeepSpeed's ``init_distributed`` builds the ``deepspeed_shm_comm`` op (a ~60 s JIT compile on a clean
machine) in ``TorchBackend.__init__`` via ``deepspeed.comm.torch.build_shm_op``; nothing here needs the
shared-memory collectives (gloo does the work), so each rank replaces that builder with one that returns
None, which TorchBackend treats as "op unavailable".
"""

from __future__ import annotations

import json
import os
import socket
import sys

WORLD = 4




def _classes():
    import torch
    from torch import nn

    class EmbeddingPipe(nn.Module):
        def __init__(self, vocab: int, hidden: int, seq: int):
            super().__init__()
            self.word = nn.Embedding(vocab, hidden)
            self.pos = nn.Embedding(seq, hidden)

        def forward(self, ids):
            return self.word(ids) + self.pos(torch.arange(ids.shape[1]))

    class TransformerBlockPipe(nn.Module):
        def __init__(self, hidden: int, ffn: int):
            super().__init__()
            self.norm = nn.LayerNorm(hidden)
            self.up = nn.Linear(hidden, ffn)
            self.down = nn.Linear(ffn, hidden)

        def forward(self, x):
            return x + self.down(torch.relu(self.up(self.norm(x))))

    class HeadPipe(nn.Module):
        def __init__(self, hidden: int, vocab: int):
            super().__init__()
            self.norm = nn.LayerNorm(hidden)
            self.out = nn.Linear(hidden, vocab, bias=False)

        def forward(self, x):
            return self.out(self.norm(x))

    return EmbeddingPipe, TransformerBlockPipe, HeadPipe


def _cases():
    """(name, layer specs, tied) for each model; the blocks differ in width so 'parameters' is not 'uniform'."""
    from deepspeed.pipe import LayerSpec, TiedLayerSpec

    emb_cls, block_cls, head_cls = _classes()
    vocab, hidden, seq = 500, 32, 16
    widths = [64, 64, 256, 64, 128, 64, 64, 512, 64, 64]
    untied = ([LayerSpec(emb_cls, vocab, hidden, seq)] + [LayerSpec(block_cls, hidden, w) for w in widths]
              + [LayerSpec(head_cls, hidden, vocab)])

    def logits(module, x):
        return x @ module.word.weight.t()

    tied = ([TiedLayerSpec("embed", emb_cls, vocab, hidden, seq, tied_weight_attr=["word.weight"])]
            + [LayerSpec(block_cls, hidden, w) for w in widths]
            + [TiedLayerSpec("embed", emb_cls, vocab, hidden, seq, forward_fn=logits, tied_weight_attr=["word.weight"])])
    return [("untied", untied, False), ("tied", tied, True)]


def _layer_facts(specs, tied: bool):
    """Class name and trainable parameters of each layer, tied weights counted once (the profile's rule)."""
    facts, seen = [], set()
    for spec in specs:
        module = spec.build()
        key = getattr(spec, "key", None)
        count = sum(p.numel() for p in module.parameters() if p.requires_grad)
        if key is not None:
            count = 0 if key in seen else count
            seen.add(key)
        facts.append({"kind": spec.typename.__name__, "param_count": count})
    return facts


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), DS_ACCELERATOR="cpu")
    import torch

    torch.set_num_threads(1)
    import importlib

    import deepspeed
    from deepspeed.pipe import PipelineModule

    # ``import deepspeed.comm.torch as m`` would bind the torch package (deepspeed.comm has a ``torch`` attribute).
    ds_comm_torch = importlib.import_module("deepspeed.comm.torch")
    ds_comm_torch.build_shm_op = lambda: None  # skip the JIT build of deepspeed_shm_comm (see module docstring)
    deepspeed.init_distributed(dist_backend="gloo")
    results = []
    for name, specs, tied in _cases():
        for stages in (2, 4):
            for method in ("uniform", "parameters", "type:transformerblock", "type:Head|Embedding"):
                module = PipelineModule(layers=specs, num_stages=stages, partition_method=method)
                results.append({"model": name, "tied": tied, "num_stages": stages, "method": method,
                                "parts": [int(x) for x in module.parts]})
    if rank == 0:
        facts = {name: _layer_facts(specs, tied) for name, specs, tied in _cases()}
        with open(out + ".tmp", "w") as fh:
            json.dump({"cases": results, "layers": facts}, fh)
        os.replace(out + ".tmp", out)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def main() -> None:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_worker, args=(port, sys.argv[1]), nprocs=WORLD, start_method="spawn")


if __name__ == "__main__":
    main()
