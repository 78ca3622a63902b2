"""Turn a MODEL argument into pipeline layers: preset, spec string, Hugging Face config, or a user factory.

Forms of MODEL:
- a preset name (``gpt2-medium``) or a spec string (``gpt:layers=4,hidden=256,heads=4``): pptune's own layers;
- ``hf:gpt2`` / ``hf:llama``, optionally ``hf:gpt2?n_layer=4&n_embd=256``: a Hugging Face model built offline;
- ``package.module:function``: a user factory returning a list of ``nn.Module``s or DeepSpeed ``LayerSpec``s
  (called as ``function(seq_len=...)`` when it accepts ``seq_len``, else ``function()``). Its first layer
  must take token ids (it must hold an ``nn.Embedding``), because the profiler feeds it token ids.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from pptune.errors import ConfigError
from pptune.model.layers import build_layers, pipeline_loss
from pptune.model.spec import PRESETS, TransformerSpec, is_spec_model, resolve_spec

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
BUILD_SEED = 0  # layers are built from a fixed seed so two profiles of one model see the same weights
FP32_BYTES = 4


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelLayers:
    """A model cut into pipeline layers, ready to profile or to hand to a PipelineModule."""

    name: str  # the MODEL argument as given
    layers: list[nn.Module]  # pipeline order; layer 0 takes token ids [b, s]
    spec: TransformerSpec | None  # when the model came from a preset or spec string
    roles: list[str]  # "embedding" | "block" | "head" | "other", one per layer
    vocab_size: int  # token ids fed to layer 0 are drawn from [0, vocab_size)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # last stage's loss(logits, labels)
    default_seq_len: int | None = None  # the model's own sequence length, when it has one

    def __iter__(self) -> Iterator[object]:
        """Unpack as ``name, layers, spec`` (the tuple form CONTRACTS.md first described)."""
        return iter((self.name, self.layers, self.spec))


def load_model_layers(model: str, seq_len: int | None = None) -> ModelLayers:
    """Build the pipeline layers of MODEL (see the module docstring for the accepted forms).

    Args:
        model: preset, spec string, ``hf:...`` or ``package.module:function``.
        seq_len: the sequence length the layers will run at; checked against a learned-position
            model's table (``spec.seq_len``, GPT-2's ``n_positions``). None: the model's own length.

    Raises:
        ConfigError: unknown model, a sequence longer than the position table, a model too large for
            this machine's memory, or a factory that fails or returns something other than layers.
    """
    if seq_len is not None and (not isinstance(seq_len, int) or seq_len <= 0):
        raise ConfigError(f"seq_len must be a positive integer, got {seq_len!r}")
    if model.startswith("hf:"):
        return _from_hf(model, seq_len)
    if is_spec_model(model):
        return _from_spec(model, resolve_spec(model), seq_len)
    if _FACTORY.match(model):
        return _from_factory(model, seq_len)
    raise ConfigError(
        f"unknown model {model!r}; use a preset ({', '.join(PRESETS)}), a spec 'gpt:layers=..,hidden=..,heads=..', "
        "'hf:gpt2' / 'hf:llama[?key=value&...]' or 'package.module:function'"
    )


def _from_spec(name: str, spec: TransformerSpec, seq_len: int | None) -> ModelLayers:
    if spec.attention != "flash":  # pptune.model.blocks.attend: torch's fused scaled_dot_product_attention
        raise ConfigError(f"model {name!r}: attention={spec.attention} is an analytic-profile input (pptune estimate/plan); "
                          "pptune's layers run torch's fused scaled_dot_product_attention, so a measured profile "
                          "times that kernel")
    if seq_len is not None and spec.position == "learned" and seq_len > spec.seq_len:
        raise ConfigError(
            f"model {name!r}: seq_len {seq_len} is longer than its {spec.seq_len} learned positions"
        )
    check_fits_in_memory(name, spec.param_count)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BUILD_SEED)
        layers = build_layers(spec)
    roles = ["embedding", *["block"] * spec.num_layers, "head"]
    return ModelLayers(name=name, layers=layers, spec=spec, roles=roles, vocab_size=spec.vocab_size, loss_fn=pipeline_loss,
                       default_seq_len=spec.seq_len)


def _from_hf(name: str, seq_len: int | None) -> ModelLayers:
    from pptune.model import hf

    config = hf.hf_config(name)
    max_positions = hf.hf_max_positions(config)
    if seq_len is not None and max_positions is not None and seq_len > max_positions:
        raise ConfigError(f"model {name!r}: seq_len {seq_len} is longer than its {max_positions} learned positions")
    check_fits_in_memory(name, hf.hf_param_count(config))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BUILD_SEED)
        layers, roles = hf.build_hf_layers(config)
    return ModelLayers(name=name, layers=layers, spec=None, roles=roles, vocab_size=config.vocab_size, loss_fn=pipeline_loss,
                       default_seq_len=hf.hf_seq_len(config))


def _from_factory(name: str, seq_len: int | None) -> ModelLayers:
    module_name, _, function_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model {name!r}: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ConfigError(f"model {name!r}: {module_name} has no function {function_name!r}")
    accepts_seq = "seq_len" in inspect.signature(factory).parameters
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BUILD_SEED)
        try:
            items = factory(seq_len=seq_len) if accepts_seq else factory()
        except Exception as exc:  # the user's code: report it on one line rather than crash
            raise ConfigError(f"model {name!r}: the factory raised {type(exc).__name__}: {exc}") from None
        layers = modules_from_items(name, items)
    embedding = next((m for m in layers[0].modules() if isinstance(m, nn.Embedding)), None)
    if embedding is None:
        raise ConfigError(f"model {name!r}: the first layer ({type(layers[0]).__name__}) has no nn.Embedding; "
                          "pptune feeds layer 0 token ids")
    return ModelLayers(name=name, layers=layers, spec=None, roles=infer_roles(layers),
                       vocab_size=embedding.num_embeddings, loss_fn=None)


class TiedForward(nn.Module):
    """A ``TiedLayerSpec`` entry with a ``forward_fn``: calls ``forward_fn(tied_module, x)`` as DeepSpeed does."""

    def __init__(self, tied: nn.Module, forward_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.tied, self.forward_fn = tied, forward_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_fn(self.tied, x)


class FunctionLayer(nn.Module):
    """A plain callable in a layer list (DeepSpeed allows them, e.g. a lambda that reshapes)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def modules_from_items(name: str, items: object) -> list[nn.Module]:
    """Modules from a layer list of ``nn.Module``s, ``LayerSpec``s (built here) and callables.

    ``TiedLayerSpec``s with one key build one module, shared as in ``PipelineModule._build``.
    """
    if isinstance(items, nn.Sequential):
        items = list(items)
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"model {name!r}: the factory must return a non-empty list of layers, got {type(items).__name__}")
    from deepspeed.pipe import LayerSpec, TiedLayerSpec

    tied: dict[str, nn.Module] = {}
    layers: list[nn.Module] = []
    for i, item in enumerate(items):
        if isinstance(item, TiedLayerSpec):
            if item.key not in tied:
                tied[item.key] = item.build()
            module = tied[item.key]
            layers.append(module if item.forward_fn is None else TiedForward(module, item.forward_fn))
        elif isinstance(item, LayerSpec):
            layers.append(item.build())
        elif isinstance(item, nn.Module):
            layers.append(item)
        elif callable(item):
            layers.append(FunctionLayer(item))
        else:
            raise ConfigError(f"model {name!r}: layer {i} is a {type(item).__name__}, not a module, LayerSpec or callable")
    return layers


def infer_roles(layers: list[nn.Module]) -> list[str]:
    """Layer 0 is the embedding, the last the head; a class repeated in between is a block, others are other."""
    middle = [type(layer).__name__ for layer in layers[1:-1]]
    counts = Counter(middle)
    roles = ["block" if counts[kind] > 1 else "other" for kind in middle]
    return ["embedding", *roles, "head"] if len(layers) > 1 else ["embedding"]


def check_fits_in_memory(name: str, param_count: int) -> None:
    """Refuse a model whose fp32 weights alone exceed this machine's available memory (it would be killed)."""
    available = _available_memory_bytes()
    need = param_count * FP32_BYTES
    if available is not None and need > available:
        raise ConfigError(
            f"model {name!r} has {format_count(param_count)} parameters ({need / 2**30:,.1f} GiB in fp32), "
            f"more than the {available / 2**30:.1f} GiB of memory available here; profile a smaller variant"
        )


def format_count(n: float) -> str:
    """A large count in words: ``49.98 trillion``, ``124.4 million``, ``1,234``."""
    for scale, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million")):
        if n >= scale:
            return f"{n / scale:,.2f} {word}"
    return f"{n:,.0f}"


def _available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
