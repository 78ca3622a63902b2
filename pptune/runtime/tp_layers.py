"""Megatron-style tensor-parallel layers, cut from the full (tp = 1) layers so both start from the same weights.

Megatron-LM's CPU initialisation (``_initialize_affine_weight_cpu`` in megatron/core/tensor_parallel/layers.py,
NVIDIA/Megatron-LM @960c06b972) draws the whole master weight and keeps this rank's slice; the layers here do the
same from an already initialised full ``nn.Linear`` / ``nn.Embedding``, so at the same seed a tp model holds
exactly the tp = 1 model's weights, split.

- ``ColumnParallelLinear``: output features split (rows of the weight); its input is the full activation
  (``tp_comm.enter_tp`` first). Several row ranges make a fused projection (q, k and v of this rank's heads).
- ``RowParallelLinear``: input features split (weight columns); partial outputs are reduced (``exit_tp``),
  then the replicated bias is added.
- ``VocabParallelEmbedding``: vocabulary rows split; ids outside this rank's range look up zeros, the partial
  embeddings are reduced. The vocabulary is split in equal parts of ``ceil(V / tp)`` rows (Megatron pads the
  vocabulary for the same reason); rows past ``V`` are padding that no id selects and the loss masks out.

Split parameters carry ``tensor_model_parallel = True`` (DeepSpeed's ``is_model_parallel_parameter``,
deepspeed/runtime/utils.py, counts them on every tp rank in the gradient norm; replicated ones only on
model-parallel rank 0) and ``pptune_shard``, the slice of the full parameter they hold (tests compare gradients
with it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pptune.errors import ConfigError
from pptune.runtime.tp_comm import TensorParallel, exit_tp

Ranges = tuple[tuple[int, int], ...]


def split_range(total: int, tp: TensorParallel, *, what: str) -> tuple[int, int]:
    """This rank's ``[start, stop)`` of ``total`` units split evenly (``total % tp == 0`` required)."""
    if total % tp.size:
        raise ConfigError(f"{what} {total} is not divisible by tp {tp.size} (Megatron splits it evenly)")
    part = total // tp.size
    return tp.rank * part, (tp.rank + 1) * part


def vocab_range(vocab_size: int, tp: TensorParallel) -> tuple[int, int, int]:
    """``(start, stop, rows)``: this rank's vocabulary ids ``[start, stop)`` and its padded row count ``ceil(V/tp)``."""
    rows = -(-vocab_size // tp.size)
    start = min(tp.rank * rows, vocab_size)
    return start, min(start + rows, vocab_size), rows


def _mark(param: nn.Parameter, *, dim: int, ranges: Ranges, rows: int | None = None) -> nn.Parameter:
    param.tensor_model_parallel = True  # type: ignore[attr-defined]
    param.partition_dim = dim  # type: ignore[attr-defined]  # Megatron's attribute names
    param.pptune_shard = {"dim": dim, "ranges": [list(r) for r in ranges], "rows": rows}  # type: ignore[attr-defined]
    return param


def _take(full: torch.Tensor, dim: int, ranges: Ranges) -> torch.Tensor:
    return torch.cat([full.narrow(dim, a, b - a) for a, b in ranges], dim=dim).detach().clone()


class ColumnParallelLinear(nn.Module):
    """``y_local = x_full @ W[rows].T + b[rows]``: this rank's output features of ``full``."""

    def __init__(self, full: nn.Linear, ranges: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        ranges = tuple((int(a), int(b)) for a, b in ranges)
        self.weight = _mark(nn.Parameter(_take(full.weight, 0, ranges)), dim=0, ranges=ranges)
        self.bias = None if full.bias is None else _mark(nn.Parameter(_take(full.bias, 0, ranges)), dim=0,
                                                        ranges=ranges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """``y = reduce(x_local @ W[:, cols].T) + b``: this rank's input features of ``full``, the bias replicated."""

    def __init__(self, full: nn.Linear, cols: tuple[int, int], tp: TensorParallel) -> None:
        super().__init__()
        self.tp = tp
        ranges = (cols,)
        self.weight = _mark(nn.Parameter(_take(full.weight, 1, ranges)), dim=1, ranges=ranges)
        self.bias = None if full.bias is None else nn.Parameter(full.bias.detach().clone())

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``bias``: the bias to add (``tp_comm.replicated(self.bias)`` under sequence parallelism)."""
        y = exit_tp(F.linear(x, self.weight), self.tp)
        return y if bias is None else y + bias


class VocabParallelEmbedding(nn.Module):
    """Token ids to partial embeddings: the rows of this rank's vocabulary range, zeros for other ids (unreduced).

    ``full_weight`` is ``[V, h]``: an ``nn.Embedding``'s weight, or an LM head's (the untied head keeps its rows
    in one of these too and multiplies by ``weight``, as a column-parallel linear over the padded vocabulary).
    """

    def __init__(self, full_weight: torch.Tensor, tp: TensorParallel) -> None:
        super().__init__()
        vocab, hidden = full_weight.shape
        self.start, self.stop, rows = vocab_range(vocab, tp)
        weight = torch.zeros(rows, hidden, dtype=full_weight.dtype)
        weight[: self.stop - self.start] = full_weight.detach()[self.start:self.stop]
        self.weight = _mark(nn.Parameter(weight), dim=0, ranges=((self.start, self.stop),), rows=rows)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        outside = (input_ids < self.start) | (input_ids >= self.stop)
        local = (input_ids - self.start).masked_fill(outside, 0)
        return F.embedding(local, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
