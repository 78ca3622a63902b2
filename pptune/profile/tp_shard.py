"""The layers one tensor-parallel rank runs, for the profiler: a measured profile at tp > 1.

A measured profile is taken at tp 1 and the cost model re-shards it by ``1/tp`` (``pptune.cost.layers``), which
assumes every op of a block splits over tp. pptune's own tp 2 layers on this machine (gloo, one thread per rank,
the local validation's model) did not: with their collectives left out, one rank's forward + backward took 1.5x
half the tp 1 chain at micro-batch 1 and 1.13x at 16 (the norms, residual adds and loss stay whole on every rank,
and small GEMMs lose efficiency). So ``pptune profile --tp N`` times what rank 0 of N really computes: the runtime's
Megatron-style layers (``pptune.runtime.tp_blocks``) built on a ``TensorParallel`` that is ``compute_only`` (each
collective hands on a tensor of the right shape without communicating), with the vocabulary-parallel loss. The
profile records ``tp = N`` (per-rank parameters, shapes and times), and the cost model prices the collectives.
"""

from __future__ import annotations

import torch

from pptune.errors import ConfigError
from pptune.model.resolve import BUILD_SEED, ModelLayers
from pptune.model.spec import spec_or_none


def tp_model_layers(model: str, tp: int, seq_len: int | None = None) -> ModelLayers:
    """Rank 0's shard of MODEL (a preset or spec string) at tensor-parallel size ``tp``, collectives left out.

    Raises:
        ConfigError: a model without a spec (HF configs and factories have no tp layers), or one the runtime's tp
            layers cannot split by ``tp`` (heads, FFN or KV heads not divisible).
    """
    from pptune.runtime.topology import tp_problem
    from pptune.runtime.tp_blocks import build_tp_layers
    from pptune.runtime.tp_comm import TensorParallel
    from pptune.runtime.tp_loss import VocabParallelLoss

    spec = spec_or_none(model)
    if spec is None:
        raise ConfigError(f"model {model!r}: --tp > 1 profiles pptune's tensor-parallel layers, which need a preset "
                          "or spec model")
    problem = tp_problem(spec, tp=tp, seq_len=seq_len or spec.seq_len, sequence_parallel=False)
    if problem:
        raise ConfigError(problem)
    shard = TensorParallel(size=tp, rank=0, compute_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BUILD_SEED)
        layers = build_tp_layers(spec, shard)
    return ModelLayers(name=model, layers=layers, spec=spec, roles=["embedding", *["block"] * spec.num_layers, "head"],
                       vocab_size=spec.vocab_size, loss_fn=VocabParallelLoss(shard, spec.vocab_size),
                       default_seq_len=spec.seq_len)
