"""Parameters and activation bytes of one pipeline layer on one tensor-parallel rank (analytic profile).

Saved activations follow Korthikanti et al. (MLSys'23, Sec 4.1): a GPT block at 16 bits saves
``s*b*h*(34 + 5*a*s/h)`` bytes, of which ``10*s*b*h`` (layer-norm inputs, the QKV and MLP inputs, two dropout
masks) are replicated on every TP rank, ``24*s*b*h/t`` (Q, K, V, the projection input, the MLP's
``4h``-wide GELU input and output) are sharded, and ``5*a*s^2*b/t`` are the attention scores (softmax output,
its dropout mask and output). With sequence parallelism the replicated part is split by ``t`` too.

Choices taken here, each a generalisation of that formula:
- Flash-attention-style fused attention (the default) keeps no ``s x s`` tensor: the ``5*a*s/h`` term is replaced
  by the fp32 log-sum-exp per head and row (``4*b*a*s/t`` bytes). ``flash=False`` restores the paper's term.
- Dropout masks (1 byte per element) only for the LayerNorm (GPT) family: GPT recipes train with dropout 0.1,
  Llama recipes with none. pptune's own torch blocks have no dropout, so measured profiles sit ``2*s*b*h`` lower.
- Element size ``e`` from the dtype (the paper's 2 bytes); grouped-query attention narrows K and V;
  SwiGLU saves its two ``f``-wide inputs and the ``f``-wide product (a fused kernel, as Megatron's).
"""

from __future__ import annotations

from pptune.model.spec import TransformerSpec
from pptune.profile.flops import CE_DTYPE_BYTES, DTYPE_BYTES, MASK_BYTES, vocab_shard

TOKEN_ID_BYTES = 8  # int64 input ids


def block_params(spec: TransformerSpec, tp: int) -> int:
    """Parameters of one block on one rank: column/row-parallel weights split, row-parallel biases and norms whole.

    At ``tp = 1`` this equals ``TransformerSpec.block_param_count``.
    """
    h, f = spec.hidden_size, spec.ffn_hidden_size
    kv = spec.kv_heads * spec.head_dim
    bias = spec.norm == "layernorm"  # the spec's convention: the LayerNorm family has biases
    attn = (h * (h + 2 * kv) + h * h) // tp + ((h + 2 * kv) // tp + h if bias else 0)
    mlp_in = 2 if spec.mlp == "swiglu" else 1
    mlp = (mlp_in + 1) * h * f // tp + (f // tp + h if bias else 0)  # SwiGLU's gate carries no bias
    norms = (4 if spec.norm == "layernorm" else 2) * h
    return attn + mlp + norms


def embedding_params(spec: TransformerSpec, tp: int) -> int:
    """Vocab-parallel word embedding plus replicated learned positions."""
    pos = spec.seq_len * spec.hidden_size if spec.position == "learned" else 0
    return vocab_shard(spec, tp) * spec.hidden_size + pos


def head_params(spec: TransformerSpec, tp: int) -> int:
    """Final norm plus the vocab-parallel LM head (zero head weights when tied: counted on the embedding)."""
    norm = (2 if spec.norm == "layernorm" else 1) * spec.hidden_size
    return norm + (0 if spec.tied_embeddings else vocab_shard(spec, tp) * spec.hidden_size)


def _dropout(spec: TransformerSpec) -> int:
    return MASK_BYTES if spec.norm == "layernorm" else 0


def block_saved_bytes(spec: TransformerSpec, *, b: int, s: int, tp: int, dtype: str, sequence_parallel: bool,
                      flash: bool) -> int:
    """Activations one block saves for backward on one rank (no recompute); see the module docstring."""
    e, drop = DTYPE_BYTES[dtype], _dropout(spec)
    h, f, a = spec.hidden_size, spec.ffn_hidden_size, spec.num_heads
    kv = spec.kv_heads * spec.head_dim
    sb = s * b
    replicated = sb * h * (4 * e + 2 * drop)  # 2 norm inputs, QKV input, MLP input; 2 dropout masks
    if sequence_parallel:
        replicated /= tp
    qkv_proj = sb * (2 * h + 2 * kv) * e  # Q, K, V and the projection's input
    mlp = (3 if spec.mlp == "swiglu" else 2) * sb * f * e
    if flash:
        scores = 4 * b * a * s  # fp32 log-sum-exp per head and query row
    else:
        scores = a * s * s * b * (2 * e + drop)  # softmax output, dropout mask, dropout output
    return round(replicated + (qkv_proj + mlp + scores) / tp)


def embedding_saved_bytes(spec: TransformerSpec, *, b: int, s: int, tp: int, sequence_parallel: bool) -> int:
    """Token ids (the gather's index) and, for GPT, the embedding dropout mask."""
    n = s * b * spec.hidden_size
    return b * s * TOKEN_ID_BYTES + round(_dropout(spec) * (n / tp if sequence_parallel else n))


def head_saved_bytes(spec: TransformerSpec, *, b: int, s: int, tp: int, dtype: str, sequence_parallel: bool) -> int:
    """Final-norm input, the logits GEMM input and the fp32 softmax the vocab-parallel cross-entropy keeps."""
    n = s * b * spec.hidden_size
    n_rep = n / tp if sequence_parallel else n
    return round(2 * n_rep * DTYPE_BYTES[dtype] + b * s * vocab_shard(spec, tp) * CE_DTYPE_BYTES)


def hidden_bytes(spec: TransformerSpec, *, b: int, s: int, tp: int, dtype: str, sequence_parallel: bool) -> int:
    """The hidden state ``[s, b, h]`` a layer hands on (the pipeline's p2p message); sequence-split under SP."""
    n = s * b * spec.hidden_size * DTYPE_BYTES[dtype]
    return n // tp if sequence_parallel else n


def logits_bytes(spec: TransformerSpec, *, b: int, s: int, tp: int, dtype: str) -> int:
    """The head's output: this rank's vocab-parallel logits."""
    return b * s * vocab_shard(spec, tp) * DTYPE_BYTES[dtype]
