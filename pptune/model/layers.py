"""Pipeline-ready layers of a TransformerSpec: embedding, N identical blocks, head; and the pipeline loss.

Each layer's forward takes one tensor and returns one, so the same list is the layer list of a
DeepSpeed ``PipelineModule`` (via ``build_layer_specs``) or of pptune's own runtime (``build_layers``).

Tied embeddings. DeepSpeed ties weights across stages with ``TiedLayerSpec``: the first and the
last entry name the same key, the module is built once per stage that holds either entry, and
the head runs ``forward_fn(tied_module, hidden)`` (as Megatron-DeepSpeed's ``GPTModelPipe`` does).
The head's ``forward_fn`` sees only the tied module, so when embeddings are tied the final norm
lives in ``EmbeddingPipe`` (``final_norm``), and ``build_layers`` shares that norm and the word
embedding with ``HeadPipe``: both lists compute the same thing, with the same module ownership.
A profile therefore counts the final norm with the embedding when embeddings are tied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from pptune.model.blocks import INIT_STD, TransformerBlockPipe, make_norm
from pptune.model.spec import TransformerSpec

if TYPE_CHECKING:  # deepspeed is heavy; imported only where LayerSpecs are built
    from deepspeed.pipe import LayerSpec

__all__ = [
    "EmbeddingPipe", "HeadPipe", "TransformerBlockPipe", "build_layer_specs", "build_layers", "pipeline_loss",
    "tied_head_forward",
]

TIE_KEY = "embed"
TIED_WEIGHT_ATTR = "word.weight"


class EmbeddingPipe(nn.Module):
    """Token ids ``[b, s]`` (int64) to hidden ``[b, s, h]``: token embedding plus learned positions (GPT) or none (RoPE).

    Args:
        spec: the model shape.
        final_norm: also own the final norm, used only by ``tied_head_forward`` (see the module docstring).
    """

    def __init__(self, spec: TransformerSpec, *, final_norm: bool = False) -> None:
        super().__init__()
        self.word = nn.Embedding(spec.vocab_size, spec.hidden_size)
        nn.init.normal_(self.word.weight, std=INIT_STD)
        self.position = nn.Embedding(spec.seq_len, spec.hidden_size) if spec.position == "learned" else None
        if self.position is not None:
            nn.init.normal_(self.position.weight, std=INIT_STD / 2)  # GPT-2 initialises wpe at 0.01
        self.final_norm = make_norm(spec) if final_norm else None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.word(input_ids)
        if self.position is not None:
            hidden = hidden + self.position(torch.arange(input_ids.shape[-1], device=input_ids.device))
        return hidden


def tied_head_forward(embedding: EmbeddingPipe, hidden: torch.Tensor) -> torch.Tensor:
    """The head of a tied model as DeepSpeed calls it: ``forward_fn(tied_module, hidden) -> logits``."""
    assert embedding.final_norm is not None, "a tied EmbeddingPipe must be built with final_norm=True"
    return F.linear(embedding.final_norm(hidden), embedding.word.weight)


class HeadPipe(nn.Module):
    """Hidden ``[b, s, h]`` to logits ``[b, s, V]``: final norm, then the LM head (no bias).

    Args:
        spec: the model shape.
        tied_embedding: share the final norm and the word embedding of this ``EmbeddingPipe``
            (built with ``final_norm=True``) instead of owning a norm and a ``V x h`` matrix.
    """

    def __init__(self, spec: TransformerSpec, *, tied_embedding: EmbeddingPipe | None = None) -> None:
        super().__init__()
        if tied_embedding is None:
            self.norm = make_norm(spec)
            self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
            nn.init.normal_(self.lm_head.weight, std=INIT_STD)
        else:
            if tied_embedding.final_norm is None:
                raise ValueError("tied_embedding must be an EmbeddingPipe built with final_norm=True")
            self.norm = tied_embedding.final_norm
            # Built on the meta device so no V x h matrix is allocated before it is replaced by the shared one.
            self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False, device="meta")
            self.lm_head.weight = tied_embedding.word.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden))


def pipeline_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits [b, s, V]`` against ``labels [b, s]``, computed in fp32.

    Unshifted: position ``i`` is scored against ``labels[:, i]``, so the data pipeline supplies
    labels already shifted by one token (Megatron's convention: tokens = text[:-1], labels = text[1:]).
    This avoids copying the ``[b, s, V]`` logits to shift them. Synthetic benchmark data uses
    labels = inputs, which makes the task trivial but costs exactly the same.
    """
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def build_layers(spec: TransformerSpec) -> list[nn.Module]:
    """The model as pipeline layers: ``[EmbeddingPipe, TransformerBlockPipe x num_layers, HeadPipe]``.

    With ``spec.tied_embeddings`` the head shares the embedding's word matrix and final norm
    (the same ``nn.Parameter`` objects), exactly as ``build_layer_specs`` ties them in DeepSpeed.
    """
    tied = spec.tied_embeddings
    embedding = EmbeddingPipe(spec, final_norm=tied)
    blocks = [TransformerBlockPipe(spec) for _ in range(spec.num_layers)]
    head = HeadPipe(spec, tied_embedding=embedding if tied else None)
    return [embedding, *blocks, head]


def build_layer_specs(spec: TransformerSpec) -> list[LayerSpec]:
    """The same layers as DeepSpeed ``LayerSpec``s (``TiedLayerSpec`` for a tied embedding and head).

    Pass the list to ``deepspeed.pipe.PipelineModule(layers=..., loss_fn=pipeline_loss, ...)``; each
    stage then builds only its own layers. Indices match ``build_layers`` one to one.
    """
    from deepspeed.pipe import LayerSpec, TiedLayerSpec

    blocks = [LayerSpec(TransformerBlockPipe, spec) for _ in range(spec.num_layers)]
    if not spec.tied_embeddings:
        return [LayerSpec(EmbeddingPipe, spec), *blocks, LayerSpec(HeadPipe, spec)]
    attr = [TIED_WEIGHT_ATTR]
    return [
        TiedLayerSpec(TIE_KEY, EmbeddingPipe, spec, final_norm=True, tied_weight_attr=attr),
        *blocks,
        TiedLayerSpec(TIE_KEY, EmbeddingPipe, spec, final_norm=True, forward_fn=tied_head_forward, tied_weight_attr=attr),
    ]
