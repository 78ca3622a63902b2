"""TransformerSpec: the shape of a decoder-only transformer, its presets and its spec-string form."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from pptune.errors import ConfigError
from pptune.limits import check_model

Norm = Literal["layernorm", "rmsnorm"]
Mlp = Literal["gelu", "swiglu"]
Position = Literal["learned", "rope"]
Attention = Literal["flash", "unfused"]
ATTENTION_KERNELS: tuple[str, ...] = ("flash", "unfused")


@dataclass(frozen=True, kw_only=True, slots=True)
class TransformerSpec:
    """A GPT- or Llama-style decoder. Every size is a count (no units needed)."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    ffn_hidden_size: int
    vocab_size: int
    seq_len: int
    num_kv_heads: int | None = None  # None: same as num_heads (no grouped-query attention)
    tied_embeddings: bool = True
    norm: Norm = "layernorm"
    mlp: Mlp = "gelu"
    position: Position = "learned"
    # The attention kernel an analytic profile prices (pptune.profile.analytic): a fused flash-style kernel, or
    # unfused Megatron-style softmax over the s x s scores (Megatron before flash attention, --attention-backend unfused).
    attention: Attention = "flash"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"model spec: name must be a non-empty string, got {self.name!r}")
        for field in ("num_layers", "hidden_size", "num_heads", "ffn_hidden_size", "vocab_size", "seq_len"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"model {self.name!r}: {field} must be a positive integer, got {value!r}")
        kv = self.num_kv_heads
        if kv is not None and (not isinstance(kv, int) or isinstance(kv, bool) or kv <= 0):
            raise ConfigError(f"model {self.name!r}: num_kv_heads must be a positive integer, got {kv!r}")
        if not isinstance(self.tied_embeddings, bool):
            raise ConfigError(f"model {self.name!r}: tied_embeddings must be true or false, got {self.tied_embeddings!r}")
        check_model(name=self.name, layers=self.num_layers, hidden=self.hidden_size, heads=self.num_heads,
                    ffn=self.ffn_hidden_size, vocab=self.vocab_size, seq=self.seq_len, kv_heads=kv)
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"model {self.name!r}: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        kv = self.kv_heads
        if self.num_heads % kv:
            raise ConfigError(f"model {self.name!r}: num_heads {self.num_heads} is not divisible by num_kv_heads {kv}")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ConfigError(f"model {self.name!r}: norm must be layernorm or rmsnorm, got {self.norm!r}")
        if self.mlp not in ("gelu", "swiglu"):
            raise ConfigError(f"model {self.name!r}: mlp must be gelu or swiglu, got {self.mlp!r}")
        if self.position not in ("learned", "rope"):
            raise ConfigError(f"model {self.name!r}: position must be learned or rope, got {self.position!r}")
        if self.attention not in ATTENTION_KERNELS:
            raise ConfigError(f"model {self.name!r}: attention must be flash or unfused, got {self.attention!r}")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads if self.num_kv_heads is not None else self.num_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def block_param_count(self) -> int:
        """Parameters of one transformer block (weights and biases, norms included)."""
        h, f = self.hidden_size, self.ffn_hidden_size
        kv_dim = self.kv_heads * self.head_dim
        if self.norm == "layernorm":
            attn = h * (h + 2 * kv_dim) + (h + 2 * kv_dim) + h * h + h  # qkv + bias, proj + bias
            mlp = (h * f + f + f * h + h) if self.mlp == "gelu" else 3 * h * f + f + h
            norms = 4 * h
        else:  # Llama: no biases
            attn = h * (h + 2 * kv_dim) + h * h
            mlp = 2 * h * f + f * h if self.mlp == "swiglu" else 2 * h * f
            norms = 2 * h
        return attn + mlp + norms

    @property
    def embedding_param_count(self) -> int:
        pos = self.seq_len * self.hidden_size if self.position == "learned" else 0
        return self.vocab_size * self.hidden_size + pos

    @property
    def head_param_count(self) -> int:
        """Final norm plus the LM head (zero head weights when tied to the embedding)."""
        norm = 2 * self.hidden_size if self.norm == "layernorm" else self.hidden_size
        return norm + (0 if self.tied_embeddings else self.vocab_size * self.hidden_size)

    @property
    def param_count(self) -> int:
        return self.embedding_param_count + self.num_layers * self.block_param_count + self.head_param_count

    def replace(self, **changes: object) -> TransformerSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TransformerSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"model spec: unknown keys {unknown}")
        try:
            return cls(**data)
        except TypeError as exc:  # missing required keys
            raise ConfigError(f"model spec: {exc}") from None


def _gpt2(name: str, layers: int, hidden: int, heads: int) -> TransformerSpec:
    # Radford et al. 2019 (GPT-2), Table 2; vocabulary 50,257, context 1,024, tied embeddings.
    return TransformerSpec(
        name=name, num_layers=layers, hidden_size=hidden, num_heads=heads, ffn_hidden_size=4 * hidden,
        vocab_size=50257, seq_len=1024,
    )


def _gpt3(name: str, layers: int, hidden: int, heads: int) -> TransformerSpec:
    # Brown et al. 2020 (GPT-3), Table 2.1; context 2,048, GPT-2 BPE vocabulary.
    return TransformerSpec(
        name=name, num_layers=layers, hidden_size=hidden, num_heads=heads, ffn_hidden_size=4 * hidden,
        vocab_size=50257, seq_len=2048,
    )


def _llama2(name: str, layers: int, hidden: int, heads: int, ffn: int, kv: int | None = None) -> TransformerSpec:
    # Touvron et al. 2023 (Llama 2) and its released configs: RMSNorm, SwiGLU, RoPE, 32k vocabulary, untied head.
    return TransformerSpec(
        name=name, num_layers=layers, hidden_size=hidden, num_heads=heads, num_kv_heads=kv, ffn_hidden_size=ffn,
        vocab_size=32000, seq_len=4096, tied_embeddings=False, norm="rmsnorm", mlp="swiglu", position="rope",
    )


PRESETS: dict[str, TransformerSpec] = {
    s.name: s
    for s in (
        _gpt2("gpt2-small", 12, 768, 12),
        _gpt2("gpt2-medium", 24, 1024, 16),
        _gpt2("gpt2-large", 36, 1280, 20),
        _gpt2("gpt2-xl", 48, 1600, 25),
        _gpt3("gpt3-1.3b", 24, 2048, 16),  # the paper lists 24 heads of 128; 16 keeps hidden/heads = 128 exact
        _gpt3("gpt3-2.7b", 32, 2560, 32),
        _gpt3("gpt3-6.7b", 32, 4096, 32),
        _gpt3("gpt3-13b", 40, 5120, 40),
        _gpt3("gpt3-175b", 96, 12288, 96),
        _llama2("llama2-7b", 32, 4096, 32, 11008),
        _llama2("llama2-13b", 40, 5120, 40, 13824),
        _llama2("llama2-70b", 80, 8192, 64, 28672, kv=8),
    )
}

_SPEC_KEYS = {
    "layers": "num_layers", "hidden": "hidden_size", "heads": "num_heads", "kv_heads": "num_kv_heads",
    "ffn": "ffn_hidden_size", "vocab": "vocab_size", "seq": "seq_len", "tied": "tied_embeddings",
    "norm": "norm", "mlp": "mlp", "position": "position", "name": "name", "attention": "attention",
}
_TEXT_FIELDS = ("norm", "mlp", "position", "name", "attention")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
_MAX_DIGITS = 100  # far beyond every bound in pptune.limits (which then names it); keeps int() of a hostile string cheap
_FAMILIES = {"gpt": {}, "llama": {"tied_embeddings": False, "norm": "rmsnorm", "mlp": "swiglu", "position": "rope"}}


def parse_spec(text: str) -> TransformerSpec:
    """A spec string ``gpt:layers=96,hidden=12288,heads=96,seq=2048,vocab=51200`` (ffn defaults to 4*hidden).

    The family (``gpt`` or ``llama``) sets norm, MLP, position and tying; keys override them. ``attention=unfused``
    prices the unfused attention kernel (default ``flash``).
    """
    family, sep, body = text.partition(":")
    if not sep or family not in _FAMILIES:
        raise ConfigError(f"model spec {text!r}: expected '<gpt|llama>:layers=..,hidden=..,heads=..'")
    values: dict[str, object] = dict(_FAMILIES[family])
    _apply_items(text, body.split(","), values)
    for key in ("layers", "hidden", "heads"):
        if _SPEC_KEYS[key] not in values:
            raise ConfigError(f"model spec {text!r}: missing {key}=")
    hidden = int(values["hidden_size"])  # type: ignore[arg-type]
    values.setdefault("ffn_hidden_size", 4 * hidden if family == "gpt" else _llama_ffn(hidden))
    values.setdefault("vocab_size", 50257 if family == "gpt" else 32000)
    values.setdefault("seq_len", 2048)
    values.setdefault("name", text)
    return TransformerSpec(**values)  # type: ignore[arg-type]


def _apply_items(text: str, items: list[str], values: dict[str, object]) -> None:
    """Set the fields ``key=value`` items name (spec-string keys) in ``values``; ConfigError names a bad one."""
    seen: set[str] = set()
    for item in filter(None, items):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in _SPEC_KEYS:
            raise ConfigError(f"model spec {text!r}: unknown or malformed item {item!r}; keys: {sorted(_SPEC_KEYS)}")
        if key in seen:  # the last one would silently win: say so rather than guess which was meant
            raise ConfigError(f"model spec {text!r}: {key}= is given twice")
        seen.add(key)
        field, raw = _SPEC_KEYS[key], raw.strip()
        if field in _TEXT_FIELDS:
            values[field] = raw
        elif field == "tied_embeddings":
            if raw.lower() not in _BOOLEANS:
                raise ConfigError(f"model spec {text!r}: tied must be one of {'/'.join(_BOOLEANS)}, got {raw!r}")
            values[field] = _BOOLEANS[raw.lower()]
        else:
            # int() would also take "1_0", "+4" and 10^5 digits; a count here is plain ASCII digits
            if not (raw.isascii() and raw.isdecimal() and len(raw) <= _MAX_DIGITS) or int(raw) < 1:
                raise ConfigError(f"model spec {text!r}: {key} must be a positive integer, got {key}={raw!r}")
            values[field] = int(raw)


def parse_preset(text: str) -> TransformerSpec:
    """A preset with changed keys, ``gpt3-175b?attention=unfused`` or ``gpt2-medium?seq=512&attention=unfused``.

    The keys are the spec string's; the name stays the text as given (so two variants are not the same model).
    """
    name, _, query = text.partition("?")
    if name not in PRESETS:
        raise ConfigError(f"model {text!r}: unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    values = PRESETS[name].to_dict()
    _apply_items(text, query.split("&"), values)
    if values["name"] == name:
        values["name"] = text
    return TransformerSpec(**values)  # type: ignore[arg-type]


def _llama_ffn(hidden: int) -> int:
    # Llama's rule: 2/3 of 4h, rounded up to a multiple of 256.
    ffn = int(2 * 4 * hidden / 3)
    return 256 * ((ffn + 255) // 256)


def resolve_spec(name_or_spec: str) -> TransformerSpec:
    """A preset name (``gpt2-medium``) or a spec string (``gpt:layers=..``)."""
    spec = spec_or_none(name_or_spec)
    if spec is not None:
        return spec
    if name_or_spec.startswith("hf:"):
        raise ConfigError(
            f"model {name_or_spec!r}: Hugging Face models work only in 'pptune profile'; profile it first "
            f"(pptune profile '{name_or_spec}' -o profile.json) and pass the profile file, or use a preset "
            f"({', '.join(PRESETS)}) or a spec 'gpt:layers=..,hidden=..,heads=..'"
        )
    raise ConfigError(f"unknown model {name_or_spec!r}; presets: {', '.join(PRESETS)}; or a spec 'gpt:layers=..,hidden=..,heads=..'")


def is_spec_model(text: str) -> bool:
    """Whether ``text`` names a preset or is a spec string (``gpt:...`` / ``llama:...``), valid or not."""
    return text.partition("?")[0] in PRESETS or (":" in text and text.split(":", 1)[0] in _FAMILIES)


def spec_or_none(text: str) -> TransformerSpec | None:
    """The spec of a preset or spec string; None for anything else (``hf:...``, ``package.module:function``).

    A spec string with a bad value raises ConfigError naming it (``layers=0``): callers that accept other
    model forms too use this rather than swallowing resolve_spec's errors.
    """
    if text in PRESETS:
        return PRESETS[text]
    if text.partition("?")[0] in PRESETS:
        return parse_preset(text)
    if is_spec_model(text):
        return parse_spec(text)
    return None


def with_attention(text: str, spec: TransformerSpec, attention: str | None) -> TransformerSpec:
    """``spec`` (parsed from ``text``) with the attention kernel a command line asks for (None: the spec's own).

    Raises:
        ConfigError: an unknown kernel, or one that contradicts an ``attention=`` the model text states.
    """
    if attention is None or attention == spec.attention:
        return spec
    if attention not in ATTENTION_KERNELS:
        raise ConfigError(f"attention must be flash or unfused, got {attention!r}")
    if "attention=" in text:
        raise ConfigError(f"model {text!r} states attention={spec.attention} but attention {attention} was asked for")
    return spec.replace(attention=attention)
