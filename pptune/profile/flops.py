"""The work of one pipeline layer on one GPU: its GEMMs (FLOPs) and its memory-bound traffic (bytes).

Shapes are Megatron's tensor-parallel shards (Shoeybi et al. 2019): QKV and MLP-in are column-parallel,
the attention projection and MLP-out row-parallel, the heads split across ``tp`` ranks, the embedding and
the LM head vocab-parallel. Norms, residual adds and the embedding's output are replicated on every rank
unless sequence parallelism (Korthikanti et al., MLSys'23) splits them along the sequence.

FLOP counts follow Narayanan et al. (SC'21, Appendix): a ``[m, k] x [k, n]`` GEMM costs ``2*m*k*n``; the
attention scores ``Q K^T`` and the weighted sum ``A V`` cost ``2*b*s^2*h`` each as computed in full
(``Work.attn_flops``; ``Work.attn_causal_skip`` says how much of that a causal fused kernel skips). A backward
GEMM costs twice its forward (input and weight gradients).

Model FLOPs (``Work.fwd_flops``, what MFU divides by) count the causal attention's lower half only, as
Megatron-LM's ``num_floating_point_operations`` does today ("Only half of the attention matrix is non-zero
and needs to be multiplied with V": its ``seq_length / hidden_size / 2`` term). Counting the full ``s x s``
(SC'21's eq. 3) books FLOPs no kernel runs: a causal flash kernel skips them, so at long sequences, where
attention dominates, the "MFU" passed 100% (``gpt:layers=4,hidden=128,heads=4,seq=1048576``: 138.5%).

GEMMs carry their shapes (``Gemm``), so the time model can apply a roofline: the unfused attention's
batched ``[s, d] x [d, s]`` products move more bytes than they compute and are memory-bound.

Memory-bound bytes are first-order estimates (read what an op reads, write what it writes, once), not kernel
measurements; backward moves about twice the forward bytes (it reads the saved input and the incoming
gradient and writes the outgoing gradient). ``fwd_ops``/``bwd_ops`` count the kernels an eager framework
launches per layer (each costs host time; see ``pptune.profile.analytic``). Tensor-parallel communication
time is *not* here: the cost model (``pptune.cost``) adds it; only its kernel launches are counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pptune.errors import ConfigError
from pptune.model.spec import TransformerSpec

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}
CE_DTYPE_BYTES = 4  # cross-entropy runs on fp32 logits (Megatron's vocab-parallel CE; pptune's pipeline_loss)
MASK_BYTES = 1  # a dropout mask element (torch bool / Megatron uint8)
# Weight gradients accumulate across micro-batches in an fp32 buffer (Megatron's ``main_grad``, DeepSpeed's
# fp32 gradient accumulation): each backward reads the new gradient and reads and writes that buffer.
MAIN_GRAD_BYTES = 4


def grad_accumulate_bytes(params: float, e: int) -> float:
    """Memory traffic of adding one micro-batch's weight gradients into the fp32 accumulation buffer."""
    return params * (e + 2 * MAIN_GRAD_BYTES)
# Share of the full s x s attention a causal model needs (the lower triangle): its model FLOPs (module docstring).
CAUSAL_ATTENTION_SHARE = 0.5
# FlashAttention-2's backward runs 5 matmuls for the forward's 2 (Dao 2023, Sec 3.1.2), recomputing Q K^T.
FLASH_BWD_FACTOR = 2.5


@dataclass(frozen=True, kw_only=True, slots=True)
class Gemm:
    """One (batched) matrix multiply ``[m, k] x [k, n]``, ``batch`` times in one kernel."""

    m: float
    k: float
    n: float
    batch: float = 1.0

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.k * self.n * self.batch

    def bytes(self, e: int) -> float:
        """Operands read and result written once (the roofline's memory side)."""
        return e * self.batch * (self.m * self.k + self.k * self.n + self.m * self.n)

    def grads(self) -> tuple[Gemm, Gemm]:
        """Its backward: input gradient ``dY W^T`` ``[m, n] x [n, k]`` and weight gradient ``X^T dY`` ``[k, m] x [m, n]``."""
        return Gemm(m=self.m, k=self.n, n=self.k, batch=self.batch), Gemm(m=self.k, k=self.m, n=self.n, batch=self.batch)


@dataclass(frozen=True, kw_only=True, slots=True)
class Work:
    """One layer's forward work on one GPU, and what its backward adds."""

    gemms: tuple[Gemm, ...]  # forward GEMMs (weights, and the unfused attention's two batched GEMMs)
    attn_flops: float  # forward attention core (Q K^T and A V) FLOPs, 0 outside blocks
    attn_fused: bool  # flash-style fused kernel: one op; backward FLASH_BWD_FACTOR x forward
    attn_causal_skip: float  # share of attn_flops a causal fused kernel skips (0.5) or 0
    fwd_bytes: float  # memory-bound forward traffic (elementwise ops; GEMM operands are the GEMMs')
    bwd_bytes: float  # memory-bound backward traffic
    attn_fwd_bytes: float = 0.0  # the attention core's share of fwd_bytes (unfused softmax, dropout, context copy)
    fwd_ops: int = 0  # kernels the framework launches in the forward (each costs host time)
    bwd_ops: int = 0  # kernels launched in the backward

    @property
    def gemm_flops(self) -> tuple[float, ...]:
        """FLOPs of each weight GEMM (the unfused attention's batched GEMMs excluded)."""
        return tuple(g.flops for g in self.gemms[:len(self.gemms) - self._attn_gemms])

    @property
    def _attn_gemms(self) -> int:
        return 0 if self.attn_fused or not self.attn_flops else 2

    @property
    def attn_gemms(self) -> tuple[Gemm, ...]:
        """The unfused attention's two batched GEMMs (``Q K^T``, ``A V``); none for a fused kernel."""
        return self.gemms[len(self.gemms) - self._attn_gemms:]

    @property
    def fwd_flops(self) -> float:
        """Model FLOPs of the forward on this GPU (GEMMs + the causal half of attention, no elementwise)."""
        return sum(self.gemm_flops) + CAUSAL_ATTENTION_SHARE * self.attn_flops


# Kernels a Megatron-style eager layer launches (Megatron-LM ParallelTransformerLayer / GPTModel, unfused
# attention: baddbmm, fused scale-mask-softmax, dropout, bmm, permute-copy). Backward: about two kernels per
# forward op (input and weight side) plus one gradient accumulation per parameter tensor. Each TP
# collective is one more launch per direction. These counts set the host-bound floor of small layers.
ATTN_OPS_UNFUSED, ATTN_OPS_FLASH = 5, 1
NORM_RESIDUAL_ACT_OPS = 5  # two norms, two bias-dropout-adds, one activation
GRAD_ACCUMULATE_OPS_PER_TENSOR = 1


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


def dropout_mask_bytes(spec: TransformerSpec) -> int:
    """Bytes per element of a dropout mask: GPT recipes train with dropout 0.1, Llama recipes with none."""
    return MASK_BYTES if spec.norm == "layernorm" else 0


def block_work(spec: TransformerSpec, *, b: int, s: int, tp: int, dtype: str, sequence_parallel: bool,
               flash: bool) -> Work:
    """One transformer block (pre-norm attention + MLP) on one of ``tp`` ranks."""
    e, drop = DTYPE_BYTES[dtype], dropout_mask_bytes(spec)
    h, f = spec.hidden_size, spec.ffn_hidden_size
    kv = spec.kv_heads * spec.head_dim
    tokens = b * s
    mlp_in = 2 if spec.mlp == "swiglu" else 1  # SwiGLU: gate and up; GELU: one up projection
    gemms = [Gemm(m=tokens, k=h, n=(h + 2 * kv) / tp), Gemm(m=tokens, k=h / tp, n=h)]  # QKV (GQA: narrower K, V), proj
    gemms += [Gemm(m=tokens, k=h, n=f / tp)] * mlp_in + [Gemm(m=tokens, k=f / tp, n=h)]
    weights = len(gemms)
    heads = spec.num_heads / tp
    attn = 4.0 * b * s * s * h / tp  # Q K^T and A V over this rank's heads
    if not flash:  # two batched GEMMs per head: [s, d] x [d, s] scores, [s, s] x [s, d] context
        gemms += [Gemm(m=s, k=spec.head_dim, n=s, batch=b * heads), Gemm(m=s, k=s, n=spec.head_dim, batch=b * heads)]
    n = tokens * h  # one hidden activation
    n_rep = n / tp if sequence_parallel else n  # replicated work unless the sequence is split
    norms = 2 * (2 * n_rep * e)  # two norms: read x, write y
    residual = 2 * (3 * n_rep * e + n_rep * drop)  # two bias-dropout-adds: read 2, write 1, write the mask
    mlp_act = (3 if spec.mlp == "swiglu" else 2) * tokens * f / tp * e  # GELU: read, write; SwiGLU: read 2, write 1
    rope = 2 * tokens * (h + kv) / tp * e if spec.position == "rope" else 0.0  # rotate Q and K in place
    fwd = norms + residual + mlp_act + rope
    attn_bytes = 0.0
    if not flash:  # s x s scores (Korthikanti Sec 4.1): softmax reads and writes them, dropout too plus its mask
        scores = b * heads * s * s
        attn_bytes = 2 * scores * e + (2 * scores * e + scores * drop if drop else 0.0) + 2 * n / tp * e  # + context copy
        fwd += attn_bytes
    ops = weights + (ATTN_OPS_FLASH if flash else ATTN_OPS_UNFUSED) + NORM_RESIDUAL_ACT_OPS + (2 if rope else 0)
    comm = 2 if tp > 1 else 0  # the attention's and the MLP's all-reduce, each direction
    tensors = weights + (weights + 4 if spec.norm == "layernorm" else 2)  # weights; biases and norm scales/shifts
    weights_elems = sum(g.k * g.n for g in gemms[:weights])
    return Work(gemms=tuple(gemms), attn_flops=attn, attn_fused=flash, attn_causal_skip=0.5 if flash else 0.0,
                fwd_bytes=fwd, bwd_bytes=2 * fwd + grad_accumulate_bytes(weights_elems, e), attn_fwd_bytes=attn_bytes,
                fwd_ops=ops + comm,
                bwd_ops=2 * ops + tensors * GRAD_ACCUMULATE_OPS_PER_TENSOR + comm)


def embedding_work(spec: TransformerSpec, *, b: int, s: int, tp: int, dtype: str, sequence_parallel: bool) -> Work:
    """Token gather (vocab-parallel) plus learned positions; backward scatters into a dense table gradient."""
    e = DTYPE_BYTES[dtype]
    n = b * s * spec.hidden_size
    fwd = 2 * n * e  # gather: read rows, write the hidden state (every rank, before the TP all-reduce)
    learned = spec.position == "learned"
    if learned:
        fwd += 3 * (n / tp if sequence_parallel else n) * e
    table = vocab_shard(spec, tp) * spec.hidden_size
    # read the gradient, zero the dense [V/tp, h] weight gradient, accumulate it into the fp32 buffer
    bwd = 2 * n * e + table * e + grad_accumulate_bytes(table, e)
    ops = 1 + learned + (1 if dropout_mask_bytes(spec) else 0)  # gather, position add, dropout
    return Work(gemms=(), attn_flops=0.0, attn_fused=False, attn_causal_skip=0.0, fwd_bytes=fwd, bwd_bytes=bwd,
                fwd_ops=ops + (tp > 1), bwd_ops=2 * ops + 1 + learned)


# Vocab-parallel cross-entropy (Megatron's _VocabParallelCrossEntropy): cast, max, subtract, exp, sum,
# log, target gather, mask and mean, each one kernel.
CE_OPS = 8


def head_work(spec: TransformerSpec, *, b: int, s: int, tp: int, dtype: str, sequence_parallel: bool) -> Work:
    """Final norm, logits GEMM (vocab-parallel) and cross-entropy over fp32 logits."""
    e = DTYPE_BYTES[dtype]
    tokens = b * s
    n_rep = tokens * spec.hidden_size / (tp if sequence_parallel else 1)
    logits = tokens * vocab_shard(spec, tp)
    norm = 2 * n_rep * e
    ce_fwd = logits * (e + CE_DTYPE_BYTES) + 3 * logits * CE_DTYPE_BYTES  # cast to fp32; max, exp-sum, log-prob passes
    ce_bwd = logits * (CE_DTYPE_BYTES + e)  # read softmax, write the logits gradient
    accumulate = grad_accumulate_bytes(vocab_shard(spec, tp) * spec.hidden_size, e)  # tied or not, [V/tp, h]
    ops = 2 + CE_OPS  # norm, GEMM, loss
    comm = 3 if tp > 1 else 0  # the vocab-parallel loss all-reduces max, sum-exp and target logit; 1 backward
    return Work(gemms=(Gemm(m=tokens, k=spec.hidden_size, n=vocab_shard(spec, tp)),), attn_flops=0.0,
                attn_fused=False, attn_causal_skip=0.0, fwd_bytes=norm + ce_fwd, bwd_bytes=2 * norm + ce_bwd + accumulate,
                fwd_ops=ops + comm, bwd_ops=2 * ops + 2 + comm // 3)
