"""The work of one pipeline layer on one GPU: its GEMMs (FLOPs) and its memory-bound traffic (bytes).

Shapes are Megatron's tensor-parallel shards (Shoeybi et al. 2019): QKV and MLP-in are column-parallel,
the attention projection and MLP-out row-parallel, the heads split across ``tp`` ranks, the embedding and
the LM head vocab-parallel. Norms, residual adds and the embedding's output are replicated on every rank
unless sequence parallelism (Korthikanti et al., MLSys'23) splits them along the sequence.

FLOP counts follow Narayanan et al. (SC'21, Appendix): a ``[m, k] x [k, n]`` GEMM costs ``2*m*k*n``; the
attention scores ``Q K^T`` and the weighted sum ``A V`` cost ``2*b*s^2*h`` each, counted in full even though
a causal kernel skips the masked half (Megatron's model-FLOPs convention; ``Work.attn_causal_skip`` says how
much of that the time model may skip). A backward GEMM costs twice its forward (input and weight gradients).

Memory-bound bytes are first-order estimates (read what an op reads, write what it writes, once), not kernel
measurements; backward moves about twice the forward bytes (it reads the saved input and the incoming
gradient and writes the outgoing gradient). Tensor-parallel communication is *not* here: the cost model
(``pptune.cost``) adds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pptune.errors import ConfigError
from pptune.model.spec import TransformerSpec

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}
CE_DTYPE_BYTES = 4  # cross-entropy runs on fp32 logits (Megatron's vocab-parallel CE; pptune's pipeline_loss)
MASK_BYTES = 1  # a dropout mask element (torch bool / Megatron uint8)
# FlashAttention-2's backward runs 5 matmuls for the forward's 2 (Dao 2023, Sec 3.1.2), recomputing Q K^T.
FLASH_BWD_FACTOR = 2.5


@dataclass(frozen=True, kw_only=True, slots=True)
class Work:
    """One layer's forward work on one GPU, and what its backward adds."""

    gemm_flops: tuple[float, ...]  # forward weight GEMMs, one entry each (backward: 2 GEMMs of the same size)
    attn_flops: float  # forward attention core (Q K^T and A V), 0 outside blocks
    attn_fused: bool  # flash-style fused kernel: one op; backward FLASH_BWD_FACTOR x forward
    attn_causal_skip: float  # share of attn_flops a causal fused kernel skips (0.5) or 0
    fwd_bytes: float  # memory-bound forward traffic
    bwd_bytes: float  # memory-bound backward traffic

    @property
    def fwd_flops(self) -> float:
        """Model FLOPs of the forward on this GPU (GEMMs + full attention, no elementwise)."""
        return sum(self.gemm_flops) + self.attn_flops


def check_tp(spec: TransformerSpec, tp: int) -> None:
    """Megatron's divisibility rules for tensor parallelism (heads, query groups, FFN width)."""
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise ConfigError(f"tp must be a positive integer, got {tp!r}")
    for what, value in (("num_heads", spec.num_heads), ("num_kv_heads", spec.kv_heads),
                        ("ffn_hidden_size", spec.ffn_hidden_size)):
        if value % tp:
            raise ConfigError(f"model {spec.name!r}: {what} {value} is not divisible by tp {tp}")


def vocab_shard(spec: TransformerSpec, tp: int) -> int:
    """Vocabulary rows per rank: ceil(V / tp). Megatron also pads V to a multiple of 128*tp (<= 2% more)."""
    return math.ceil(spec.vocab_size / tp)


def block_work(spec: TransformerSpec, *, b: int, s: int, tp: int, dtype: str, sequence_parallel: bool,
               flash: bool) -> Work:
    """One transformer block (pre-norm attention + MLP) on one of ``tp`` ranks."""
    e = DTYPE_BYTES[dtype]
    h, f = spec.hidden_size, spec.ffn_hidden_size
    kv = spec.kv_heads * spec.head_dim
    tokens = b * s
    gemms = [2.0 * tokens * h * (h + 2 * kv) / tp, 2.0 * tokens * h * h / tp]  # QKV (GQA: narrower K, V), proj
    mlp_in = 2 if spec.mlp == "swiglu" else 1  # SwiGLU: gate and up; GELU: one up projection
    gemms += [2.0 * tokens * h * f / tp] * mlp_in + [2.0 * tokens * f * h / tp]
    attn = 4.0 * b * s * s * h / tp  # Q K^T and A V over this rank's heads
    n = tokens * h  # one hidden activation
    n_rep = n / tp if sequence_parallel else n  # replicated work unless the sequence is split
    norms = 2 * (2 * n_rep * e)  # two norms: read x, write y
    residual = 2 * (3 * n_rep * e)  # two residual adds: read 2, write 1
    mlp_act = (3 if spec.mlp == "swiglu" else 2) * tokens * f / tp * e  # GELU: read, write; SwiGLU: read 2, write 1
    rope = 2 * tokens * (h + kv) / tp * e if spec.position == "rope" else 0.0  # rotate Q and K in place
    fwd = norms + residual + mlp_act + rope
    if not flash:  # scores, scale+mask+softmax, written and read back at s x s (Korthikanti Sec 4.1)
        fwd += 3 * b * (spec.num_heads / tp) * s * s * e
    return Work(gemm_flops=tuple(gemms), attn_flops=attn, attn_fused=flash, attn_causal_skip=0.5 if flash else 0.0,
                fwd_bytes=fwd, bwd_bytes=2 * fwd)


def embedding_work(spec: TransformerSpec, *, b: int, s: int, tp: int, dtype: str, sequence_parallel: bool) -> Work:
    """Token gather (vocab-parallel) plus learned positions; backward scatters into a dense table gradient."""
    e = DTYPE_BYTES[dtype]
    n = b * s * spec.hidden_size
    fwd = 2 * n * e  # gather: read rows, write the hidden state (every rank, before the TP all-reduce)
    if spec.position == "learned":
        fwd += 3 * (n / tp if sequence_parallel else n) * e
    table = vocab_shard(spec, tp) * spec.hidden_size * e
    bwd = 2 * n * e + 2 * table  # read the gradient, zero and accumulate the dense [V/tp, h] weight gradient
    return Work(gemm_flops=(), attn_flops=0.0, attn_fused=False, attn_causal_skip=0.0, fwd_bytes=fwd, bwd_bytes=bwd)


def head_work(spec: TransformerSpec, *, b: int, s: int, tp: int, dtype: str, sequence_parallel: bool) -> Work:
    """Final norm, logits GEMM (vocab-parallel) and cross-entropy over fp32 logits."""
    e = DTYPE_BYTES[dtype]
    tokens = b * s
    n_rep = tokens * spec.hidden_size / (tp if sequence_parallel else 1)
    logits = tokens * vocab_shard(spec, tp)
    norm = 2 * n_rep * e
    ce_fwd = logits * (e + CE_DTYPE_BYTES) + 3 * logits * CE_DTYPE_BYTES  # cast to fp32; max, exp-sum, log-prob passes
    ce_bwd = logits * (CE_DTYPE_BYTES + e)  # read softmax, write the logits gradient
    return Work(gemm_flops=(2.0 * tokens * spec.hidden_size * vocab_shard(spec, tp),), attn_flops=0.0,
                attn_fused=False, attn_causal_skip=0.0, fwd_bytes=norm + ce_fwd, bwd_bytes=2 * norm + ce_bwd)
