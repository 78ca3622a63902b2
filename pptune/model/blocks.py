"""The transformer block of a pipeline: pre-norm GPT (LayerNorm, GELU) or Llama (RMSNorm, RoPE, SwiGLU, GQA).

Every block of a model is the same class, ``TransformerBlockPipe``, so DeepSpeed's
``partition_method="type:transformerblockpipe"`` finds them all. Biases follow the spec's
parameter count (``TransformerSpec.block_param_count``): the LayerNorm family has biases,
the RMSNorm family has none. There is no dropout: profiles and benchmark runs time the
deterministic compute, which is what a step costs when dropout is 0 (Llama, most modern
recipes); GPT-2's dropout adds a few memory-bound element-wise ops on top.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pptune.model.spec import TransformerSpec

ROPE_BASE = 10000.0  # Su et al. 2021 (RoFormer) and Llama 2's rope_theta
INIT_STD = 0.02  # GPT-2 / Megatron initialisation of weight matrices


def make_norm(spec: TransformerSpec) -> nn.Module:
    """The spec's normalisation: LayerNorm with bias (GPT) or RMSNorm without (Llama)."""
    if spec.norm == "layernorm":
        return nn.LayerNorm(spec.hidden_size, eps=1e-5)
    return nn.RMSNorm(spec.hidden_size, eps=1e-5)


def init_linear(linear: nn.Linear) -> nn.Linear:
    nn.init.normal_(linear.weight, std=INIT_STD)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


def rope_cos_sin(seq_len: int, head_dim: int, *, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """cos and sin tables ``[seq_len, head_dim]`` of rotary embeddings (RoFormer eq. 34, rotate-half layout)."""
    inv_freq = 1.0 / ROPE_BASE ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[b, heads, s, head_dim]`` by position (the rotate-half form Llama uses)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with one fused qkv projection."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        bias = spec.norm == "layernorm"
        self.num_heads, self.kv_heads, self.head_dim = spec.num_heads, spec.kv_heads, spec.head_dim
        self.rope = spec.position == "rope"
        kv_dim = self.kv_heads * self.head_dim
        self.split = (spec.hidden_size, kv_dim, kv_dim)
        self.qkv = init_linear(nn.Linear(spec.hidden_size, spec.hidden_size + 2 * kv_dim, bias=bias))
        self.proj = init_linear(nn.Linear(spec.hidden_size, spec.hidden_size, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = attend(self.qkv(x), split=self.split, heads=(self.num_heads, self.kv_heads), head_dim=self.head_dim,
                   rope=self.rope)
        return self.proj(y)


def attend(qkv: torch.Tensor, *, split: tuple[int, int, int], heads: tuple[int, int], head_dim: int, rope: bool
           ) -> torch.Tensor:
    """Causal attention of a fused ``[b, s, q + k + v]`` projection; ``heads`` = (query, kv) heads; ``[b, s, q]`` out.

    Shared with the tensor-parallel attention (pptune.runtime.tp_blocks), which passes this rank's heads.
    """
    b, s, _ = qkv.shape
    num_heads, kv_heads = heads
    q, k, v = qkv.split(split, dim=-1)
    q = q.view(b, s, num_heads, head_dim).transpose(1, 2)
    k = k.view(b, s, kv_heads, head_dim).transpose(1, 2)
    v = v.view(b, s, kv_heads, head_dim).transpose(1, 2)
    if rope:
        cos, sin = rope_cos_sin(s, head_dim, device=qkv.device, dtype=qkv.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv_heads != num_heads)
    return y.transpose(1, 2).reshape(b, s, num_heads * head_dim)


class Mlp(nn.Module):
    """GELU MLP (GPT-2: tanh approximation) or SwiGLU (Shazeer 2020; Llama)."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        bias = spec.norm == "layernorm"
        h, f = spec.hidden_size, spec.ffn_hidden_size
        self.swiglu = spec.mlp == "swiglu"
        self.up = init_linear(nn.Linear(h, f, bias=bias))
        # SwiGLU's second input projection carries no bias, matching TransformerSpec.block_param_count.
        self.gate = init_linear(nn.Linear(h, f, bias=False)) if self.swiglu else None
        self.down = init_linear(nn.Linear(f, h, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class TransformerBlockPipe(nn.Module):
    """One pre-norm decoder block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``; hidden ``[b, s, h]`` in and out."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.norm1 = make_norm(spec)
        self.attn = CausalSelfAttention(spec)
        self.norm2 = make_norm(spec)
        self.mlp = Mlp(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
