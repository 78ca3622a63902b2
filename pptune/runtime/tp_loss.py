"""Cross-entropy over vocabulary-parallel logits, without gathering the ``[b, s, V]`` logits on one rank.

Megatron-LM's ``_VocabParallelCrossEntropy`` (megatron/core/tensor_parallel/cross_entropy.py, NVIDIA/Megatron-LM
@8e6e7cd735): the max, the target's logit and the sum of exponentials are all-reduced over tp as ``[b * s]``
vectors; each rank's gradient is its slice of ``softmax - onehot``. The loss equals ``pptune_loss`` on the full
logits (``pptune.model.layers.pipeline_loss``: fp32, mean over tokens, labels already shifted).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from pptune.runtime.tp_comm import TensorParallel, all_reduce_
from pptune.runtime.tp_layers import vocab_range


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor, start: int, tp: TensorParallel) -> torch.Tensor:
        peak = logits.max(dim=-1).values
        all_reduce_(peak, tp, dist.ReduceOp.MAX)
        shifted = logits - peak.unsqueeze(-1)
        outside = (target < start) | (target >= start + logits.shape[-1])
        local = (target - start).masked_fill(outside, 0)
        picked = shifted.gather(-1, local.unsqueeze(-1)).squeeze(-1).masked_fill(outside, 0.0)
        all_reduce_(picked, tp)
        exp = shifted.exp()
        total = exp.sum(dim=-1)
        all_reduce_(total, tp)
        ctx.save_for_backward(exp.div_(total.unsqueeze(-1)), local, outside)
        return total.log() - picked

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        # In place on the saved softmax, as Megatron's backward (``grad_input = softmax`` ... ``grad_input.mul_``):
        # no second logits-sized copy; the graph is not kept for a second backward.
        g, local, outside = ctx.saved_tensors
        g.scatter_add_(-1, local.unsqueeze(-1), -(~outside).to(g.dtype).unsqueeze(-1))
        return g.mul_(grad.unsqueeze(-1)), None, None, None


class VocabParallelLoss:
    """``loss_fn(logits [b, s, ceil(V/tp)], labels [b, s])`` for a pipeline whose head is vocabulary-parallel.

    The padding columns of the last shard (``V % tp != 0``) are cut off before the softmax, so they never count.
    """

    __name__ = "vocab_parallel_loss"  # DeepSpeed's partition summary prints the loss function's name

    def __init__(self, tp: TensorParallel, vocab_size: int) -> None:
        self.tp = tp
        self.start, stop, _ = vocab_range(vocab_size, tp)
        self.width = stop - self.start

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        mine = logits[..., : self.width].flatten(0, 1).float()  # fp32 softmax, as pipeline_loss; autograd casts back
        return _VocabParallelCrossEntropy.apply(mine, labels.flatten(), self.start, self.tp).mean()
