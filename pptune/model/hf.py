"""Hugging Face causal LMs built offline from their config classes and split into pipeline layers.

``hf:gpt2`` or ``hf:llama``, optionally with config overrides: ``hf:gpt2?n_layer=4&n_embd=256``.
The model is built from ``GPT2Config`` / ``LlamaConfig`` (never downloaded) with SDPA attention,
then cut into an embedding layer, one wrapper per decoder block (hidden in, hidden out) and a head
(final norm + ``lm_head``). The wrappers call the blocks without an attention mask: HF's SDPA path
is then causal (``is_causal = q_len > 1 and mask is None``, transformers/integrations/sdpa_attention.py),
which is what training on packed sequences without padding does. Tied weights stay shared
``nn.Parameter`` objects (a profile counts them once).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from pptune.errors import ConfigError
from pptune.limits import check_model

FAMILIES = ("gpt2", "llama")


class HfEmbeddingPipe(nn.Module):
    """Token ids ``[b, s]`` to hidden ``[b, s, h]``: HF token embedding (+ learned positions and dropout for GPT-2)."""

    def __init__(self, word: nn.Embedding, position: nn.Embedding | None = None, dropout: nn.Module | None = None):
        super().__init__()
        self.word, self.position, self.dropout = word, position, dropout

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.word(input_ids)
        if self.position is not None:
            hidden = hidden + self.position(torch.arange(input_ids.shape[-1], device=input_ids.device))
        return self.dropout(hidden) if self.dropout is not None else hidden


class HfTransformerBlockPipe(nn.Module):
    """One HF decoder block as hidden -> hidden; Llama-style blocks get their rotary tables computed here.

    The class name contains ``TransformerBlockPipe`` so ``partition_method="type:transformerblockpipe"`` matches it.
    """

    def __init__(self, block: nn.Module, rotary: nn.Module | None = None) -> None:
        super().__init__()
        self.block, self.rotary = block, rotary

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.rotary is None:
            out = self.block(hidden)
        else:
            positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
            out = self.block(hidden, position_embeddings=self.rotary(hidden, positions))
        return out[0] if isinstance(out, tuple) else out  # older transformers return (hidden, ...)


class HfHeadPipe(nn.Module):
    """Hidden to logits: the model's final norm, then its ``lm_head``."""

    def __init__(self, norm: nn.Module, lm_head: nn.Module) -> None:
        super().__init__()
        self.norm, self.lm_head = norm, lm_head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden))


def parse_hf_model(text: str) -> tuple[str, dict[str, Any]]:
    """``hf:gpt2?n_layer=4&n_embd=256`` -> (``"gpt2"``, ``{"n_layer": 4, "n_embd": 256}``)."""
    body = text.removeprefix("hf:")
    family, _, query = body.partition("?")
    if family not in FAMILIES:
        raise ConfigError(f"model {text!r}: unknown Hugging Face family {family!r}; supported: {', '.join(FAMILIES)}")
    overrides: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"model {text!r}: malformed override {item!r}; expected key=value")
        if key in overrides:
            raise ConfigError(f"model {text!r}: {key}= is given twice")
        overrides[key] = _parse_value(raw)
    return family, overrides


# The shape fields of each family's config: (layers, hidden, heads, kv heads, ffn, vocab, positions).
_SHAPE_FIELDS = {
    "gpt2": ("n_layer", "n_embd", "n_head", None, "n_inner", "vocab_size", "n_positions"),
    "llama": ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
              "vocab_size", "max_position_embeddings"),
}


def _check_override_types(text: str, overrides: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Each override must have its field's type (``n_layer=two`` is not an int): transformers does not check."""
    for key, value in overrides.items():
        default = defaults[key]
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif isinstance(default, str):
            ok, want = isinstance(value, str), "a string"
        else:  # None or a structure: the config class decides
            ok, want = True, ""
        if not ok:
            raise ConfigError(f"model {text!r}: {key} must be {want}, got {key}={value!r}")


def _check_shape(text: str, family: str, config: Any) -> None:
    """The shape pptune can build and plan: positive sizes within pptune.limits, heads dividing the width."""
    names = _SHAPE_FIELDS[family]
    layers, hidden, heads, kv, ffn, vocab, positions = (getattr(config, n, None) if n else None for n in names)
    for name, value in zip(names, (layers, hidden, heads, kv, ffn, vocab, positions), strict=True):
        if name and value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"model {text!r}: {name} must be a positive integer, got {name}={value!r}")
    check_model(name=text, layers=layers, hidden=hidden, heads=heads, kv_heads=kv, ffn=ffn, vocab=vocab, seq=positions)
    if hidden % heads:
        raise ConfigError(f"model {text!r}: {names[1]}={hidden} is not divisible by {names[2]}={heads}"
                          + (" (its default)" if names[2] not in parse_hf_model(text)[1] else ""))
    if kv is not None and heads % kv:
        raise ConfigError(f"model {text!r}: {names[2]}={heads} is not divisible by {names[3]}={kv}")


def _parse_value(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence config warnings (e.g. GPT-2's bos id 50256 outside a small test vocabulary) while building."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def hf_config(text: str) -> Any:
    """The HF config object of ``text``, with overrides checked against the config class's own attributes."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"model {text!r} needs transformers: pip install 'pptune[hf]'") from None
    family, overrides = parse_hf_model(text)
    config_class = transformers.GPT2Config if family == "gpt2" else transformers.LlamaConfig
    with _quiet_transformers():
        known = config_class().to_dict()
        unknown = sorted(k for k in overrides if k not in known)
        if unknown:
            raise ConfigError(f"model {text!r}: {config_class.__name__} has no field(s) {unknown}")
        _check_override_types(text, overrides, known)
        try:
            config = config_class(**overrides, attn_implementation="sdpa")
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"model {text!r}: {config_class.__name__} rejected the overrides: {exc}") from None
    _check_shape(text, family, config)
    return config


def hf_param_count(config: Any) -> int:
    """Parameters of the model, counted on the meta device (nothing allocated)."""
    with torch.device("meta"), _quiet_transformers():
        model = _model_class(config)(config)
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def hf_max_positions(config: Any) -> int | None:
    """Longest sequence of a learned-position model (GPT-2's ``n_positions``); None for RoPE models."""
    return config.n_positions if config.model_type == "gpt2" else None


def hf_seq_len(config: Any) -> int:
    """The model's own context length (``n_positions`` or ``max_position_embeddings``)."""
    return config.n_positions if config.model_type == "gpt2" else config.max_position_embeddings


def build_hf_layers(config: Any) -> tuple[list[nn.Module], list[str]]:
    """Build the model from ``config`` and split it into pipeline layers and their roles."""
    with _quiet_transformers():
        model = _model_class(config)(config)
    if config.model_type == "gpt2":
        body = model.transformer
        embedding = HfEmbeddingPipe(body.wte, body.wpe, body.drop)
        blocks = [HfTransformerBlockPipe(block) for block in body.h]
        head = HfHeadPipe(body.ln_f, model.lm_head)
    else:
        body = model.model
        embedding = HfEmbeddingPipe(body.embed_tokens)
        blocks = [HfTransformerBlockPipe(block, body.rotary_emb) for block in body.layers]
        head = HfHeadPipe(body.norm, model.lm_head)
    layers = [embedding, *blocks, head]
    return layers, ["embedding", *["block"] * len(blocks), "head"]


def _model_class(config: Any) -> type:
    import transformers

    return transformers.GPT2LMHeadModel if config.model_type == "gpt2" else transformers.LlamaForCausalLM
