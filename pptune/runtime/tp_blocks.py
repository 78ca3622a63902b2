"""Tensor-parallel pipeline layers of a TransformerSpec: the same layers as pptune.model.layers, split over tp ranks.

Each class has the name of its tp = 1 counterpart (``EmbeddingPipe``, ``TransformerBlockPipe``, ``HeadPipe``) and
the same submodule names, so DeepSpeed's ``type:<regex>`` partitions, ``checkpointable_layers`` and parameter
names are unchanged. Each builds the tp = 1 layer first (the same random draws, so the same weights at the same
seed) and keeps its shard (``tp_layers``). The split is Megatron's (Shoeybi et al. 2019, §3): q/k/v and the MLP's
first projections column-parallel by head and by feature, the attention output and the MLP's last projection
row-parallel, the vocabulary split in the embedding and the LM head; norms and the learned positions are
replicated. With sequence parallelism (Korthikanti et al. 2022) the hidden states between layers hold
``s / tp`` positions per rank, the column layers all-gather them and the row layers reduce-scatter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from pptune.model import blocks, layers
from pptune.model.spec import TransformerSpec
from pptune.runtime.tp_comm import TensorParallel, enter_tp, exit_tp, replicated
from pptune.runtime.tp_layers import ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding, split_range

if TYPE_CHECKING:
    from deepspeed.pipe import LayerSpec


def tp_norm(norm: nn.Module, x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """A replicated norm; on a sequence shard its weight gradients are summed over tp."""
    if not tp.sequence_parallel:
        return norm(x)
    weight, bias = replicated(tp, norm.weight, getattr(norm, "bias", None))
    if isinstance(norm, nn.LayerNorm):
        return F.layer_norm(x, norm.normalized_shape, weight, bias, norm.eps)
    return F.rms_norm(x, norm.normalized_shape, weight, norm.eps)


class ParallelAttention(nn.Module):
    """This rank's heads of a ``CausalSelfAttention``: q, k, v column-parallel, the output projection row-parallel."""

    def __init__(self, full: blocks.CausalSelfAttention, spec: TransformerSpec, tp: TensorParallel) -> None:
        super().__init__()
        self.tp, self.rope, self.head_dim = tp, full.rope, spec.head_dim
        h, kv, d = spec.hidden_size, spec.kv_heads * spec.head_dim, spec.head_dim
        q0, q1 = split_range(spec.num_heads, tp, what=f"model {spec.name!r}: attention heads")
        k0, k1 = split_range(spec.kv_heads, tp, what=f"model {spec.name!r}: KV heads")
        self.num_heads, self.kv_heads = q1 - q0, k1 - k0
        q, k, v = (q0 * d, q1 * d), (h + k0 * d, h + k1 * d), (h + kv + k0 * d, h + kv + k1 * d)
        self.split = (q[1] - q[0], k[1] - k[0], v[1] - v[0])
        self.qkv = ColumnParallelLinear(full.qkv, (q, k, v))
        self.proj = RowParallelLinear(full.proj, q, tp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = enter_tp(x, self.tp)
        y = blocks.attend(self.qkv(x), split=self.split, heads=(self.num_heads, self.kv_heads),
                          head_dim=self.head_dim, rope=self.rope)
        (bias,) = replicated(self.tp, self.proj.bias)
        return self.proj(y, bias)


class ParallelMlp(nn.Module):
    """This rank's features of an ``Mlp``: up (and gate) column-parallel, down row-parallel."""

    def __init__(self, full: blocks.Mlp, spec: TransformerSpec, tp: TensorParallel) -> None:
        super().__init__()
        self.tp = tp
        features = split_range(spec.ffn_hidden_size, tp, what=f"model {spec.name!r}: ffn_hidden_size")
        self.up = ColumnParallelLinear(full.up, (features,))
        self.gate = None if full.gate is None else ColumnParallelLinear(full.gate, (features,))
        self.down = RowParallelLinear(full.down, features, tp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = enter_tp(x, self.tp)
        if self.gate is not None:
            hidden = F.silu(self.gate(x)) * self.up(x)
        else:
            hidden = F.gelu(self.up(x), approximate="tanh")
        (bias,) = replicated(self.tp, self.down.bias)
        return self.down(hidden, bias)


class TransformerBlockPipe(nn.Module):
    """The tp version of ``pptune.model.blocks.TransformerBlockPipe`` (same name, same submodule names)."""

    def __init__(self, spec: TransformerSpec, tp: TensorParallel) -> None:
        super().__init__()
        full = blocks.TransformerBlockPipe(spec)
        self.tp = tp
        self.norm1, self.norm2 = full.norm1, full.norm2
        self.attn = ParallelAttention(full.attn, spec, tp)
        self.mlp = ParallelMlp(full.mlp, spec, tp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(tp_norm(self.norm1, x, self.tp))
        return x + self.mlp(tp_norm(self.norm2, x, self.tp))


class EmbeddingPipe(nn.Module):
    """Token ids to hidden states: vocabulary-parallel word embedding, reduced (or reduce-scattered), plus positions."""

    def __init__(self, spec: TransformerSpec, tp: TensorParallel, *, final_norm: bool = False) -> None:
        super().__init__()
        full = layers.EmbeddingPipe(spec, final_norm=final_norm)
        self.tp = tp
        self.word = VocabParallelEmbedding(full.word.weight, tp)
        self.position, self.final_norm = full.position, full.final_norm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = exit_tp(self.word(input_ids), self.tp)
        if self.position is None:
            return hidden
        seq = hidden.shape[1]
        start = self.tp.rank * seq if self.tp.sequence_parallel else 0
        (weight,) = replicated(self.tp, self.position.weight)
        return hidden + F.embedding(torch.arange(start, start + seq, device=input_ids.device), weight)


def vocab_logits(norm: nn.Module, weight: torch.Tensor, hidden: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """This rank's logits ``[b, s, ceil(V / tp)]``: final norm, full sequence, this rank's vocabulary rows."""
    return F.linear(enter_tp(tp_norm(norm, hidden, tp), tp), weight)


def tied_head_forward(embedding: EmbeddingPipe, hidden: torch.Tensor) -> torch.Tensor:
    """The head of a tied model as DeepSpeed calls it (``TiedLayerSpec.forward_fn``)."""
    assert embedding.final_norm is not None, "a tied EmbeddingPipe must be built with final_norm=True"
    return vocab_logits(embedding.final_norm, embedding.word.weight, hidden, embedding.tp)


class HeadPipe(nn.Module):
    """Final norm and a vocabulary-parallel LM head; with ``tied_embedding`` both are that embedding's."""

    def __init__(self, spec: TransformerSpec, tp: TensorParallel, *, tied_embedding: EmbeddingPipe | None = None
                 ) -> None:
        super().__init__()
        self.tp = tp
        if tied_embedding is None:
            full = layers.HeadPipe(spec)
            self.norm, self.lm_head = full.norm, VocabParallelEmbedding(full.lm_head.weight, tp)
        else:
            if tied_embedding.final_norm is None:
                raise ValueError("tied_embedding must be an EmbeddingPipe built with final_norm=True")
            self.norm, self.lm_head = tied_embedding.final_norm, tied_embedding.word

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return vocab_logits(self.norm, self.lm_head.weight, hidden, self.tp)


def build_tp_layers(spec: TransformerSpec, tp: TensorParallel) -> list[nn.Module]:
    """``[EmbeddingPipe, TransformerBlockPipe x num_layers, HeadPipe]`` split over tp (``layers.build_layers``)."""
    embedding = EmbeddingPipe(spec, tp, final_norm=spec.tied_embeddings)
    blocks_ = [TransformerBlockPipe(spec, tp) for _ in range(spec.num_layers)]
    return [embedding, *blocks_, HeadPipe(spec, tp, tied_embedding=embedding if spec.tied_embeddings else None)]


def build_tp_layer_specs(spec: TransformerSpec, tp: TensorParallel) -> list[LayerSpec]:
    """The same layers as DeepSpeed LayerSpecs, tied embeddings as ``TiedLayerSpec`` (``layers.build_layer_specs``).

    DeepSpeed ties the first and last stage's copies per tp rank (one group per data and model coordinate,
    ``PipelineModule._index_tied_modules``), so each vocabulary shard is tied to the same shard.
    """
    from deepspeed.pipe import LayerSpec, TiedLayerSpec

    body = [LayerSpec(TransformerBlockPipe, spec, tp) for _ in range(spec.num_layers)]
    if not spec.tied_embeddings:
        return [LayerSpec(EmbeddingPipe, spec, tp), *body, LayerSpec(HeadPipe, spec, tp)]
    attr = [layers.TIED_WEIGHT_ATTR]
    return [
        TiedLayerSpec(layers.TIE_KEY, EmbeddingPipe, spec, tp, final_norm=True, tied_weight_attr=attr),
        *body,
        TiedLayerSpec(layers.TIE_KEY, EmbeddingPipe, spec, tp, final_norm=True, forward_fn=tied_head_forward,
                      tied_weight_attr=attr),
    ]
