"""LayerTable: a profile's per-layer costs at one (micro-batch size, tp, dtype, sequence parallel).

Every other part of the cost model (partition, comm, memory, estimate) reads these arrays, so the
profile is interpolated and re-sharded once per shape instead of once per configuration.

Re-sharding (``profile.tp != config.tp``, e.g. a measured tp=1 profile planned at tp=4) is a documented
approximation: with ``r = profile.tp / config.tp`` a block's forward/backward time and parameters scale
by ``r`` (Megatron shards every GEMM and the attention heads; norms are ignored), embedding and head
parameters and head time scale by ``r`` (vocab-parallel), and a block's saved activations split into a
tp-replicated part and a sharded part by Korthikanti et al. (MLSys'23, Table 2):
``s*b*h*(10 + 24/t + 5*a*s/(h*t))`` bytes at 16 bits, of which ``10*s*b*h`` is replicated unless
sequence parallelism shards it too. ``output_bytes`` holds what a layer hands on under the config:
the full ``[s, b, h]``, or ``1/tp`` of it with sequence parallelism (also when the profile was not made so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate

from pptune.cost.cache import CostCache
from pptune.cost.context_parallel import split_table
from pptune.cost.schedule import W_SHARE_OF_BACKWARD
from pptune.profile.schema import Profile

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}
# Fallback head size when the profile has no spec (GPT-2/GPT-3 small use 64): only for selective recompute.
DEFAULT_HEAD_DIM = 64


@dataclass(frozen=True, kw_only=True, slots=True)
class LayerTable:
    """Per-layer costs for one GPU of one pipeline layer list (index = profile layer index)."""

    micro_batch_size: int
    tp: int
    fwd_ms: tuple[float, ...]
    bwd_ms: tuple[float, ...]  # input + weight gradient, no recompute
    bwd_weight_ms: tuple[float, ...]  # the weight-gradient part of bwd_ms (zb_h1's W): measured, or W_SHARE of it
    attn_fwd_ms: tuple[float, ...]  # the attention-core share of fwd_ms (what selective recompute re-runs)
    saved_bytes: tuple[int, ...]  # autograd-saved activations per micro-batch, no recompute
    attn_saved_bytes: tuple[int, ...]  # the attention-score share of saved_bytes (what selective recompute drops)
    output_bytes: tuple[int, ...]  # the tensor handed to the next layer (a p2p message at a stage boundary)
    input_bytes: int  # what layer 0 receives (int64 token ids)
    param_count: tuple[int, ...]  # trainable parameters per GPU, tied weights counted once (as the profile does)
    tied_param_count: int  # per-GPU parameters of the tied embedding a separate head copy holds (0 if untied)
    embedding_index: int | None
    head_index: int | None
    kinds: tuple[str, ...]
    roles: tuple[str, ...]
    fwd_flops: tuple[float, ...]  # per GPU at this tp
    hidden_size: int  # inferred from the spec or from a block's output_bytes
    act_bytes: int  # bytes of one activation element in the training dtype
    profile_source: str = "measured"
    sequence_parallel: bool = False  # the shape the table was built for (sets its TP collectives)
    cp: int = 1  # context parallelism: per-token fields hold one rank's 1/cp of the sequence (cost.context_parallel)
    kv_block_bytes: int = 0  # with cp > 1: one rank's K and V of a block, what each ring step sends
    key: tuple = ()  # (profile fingerprint, micro-batch size, tp, dtype, sequence parallel): what it was built from
    # Prefix sums (length n + 1) so a chunk's totals cost O(1): cum[x][last] - cum[x][first].
    cum: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def total(self, what: str, first: int, last: int) -> float:
        """Sum of ``what`` (fwd_ms, bwd_ms, bwd_weight_ms, attn_fwd_ms, saved_bytes, param_count, blocks) over layers [first, last)."""
        c = self.cum[what]
        return c[last] - c[first]

    @property
    def num_layers(self) -> int:
        return len(self.fwd_ms)

    def tied_copy_on(self, first: int, last: int) -> int:
        """Parameters of the tied embedding copy held by layers [first, last) (DeepSpeed TiedLayerSpec).

        The head holds a second copy only when the embedding lives elsewhere (``_build`` builds a tied
        module once per stage).
        """
        if not self.tied_param_count or self.head_index is None or not (first <= self.head_index < last):
            return 0
        if self.embedding_index is not None and first <= self.embedding_index < last:
            return 0
        return self.tied_param_count


def layer_table(profile: Profile, *, micro_batch_size: int, tp: int, dtype: str, sequence_parallel: bool = False,
                cp: int = 1, cache: CostCache | None = None) -> LayerTable:
    """The LayerTable of ``profile`` at this shape (see the module docstring for re-sharding), kept in ``cache``.

    ``cp > 1``: one context-parallel rank's share of the cp = 1 table (``pptune.cost.context_parallel``)."""
    if cache is None:
        cache = CostCache()
    if cp > 1:
        whole = layer_table(profile, micro_batch_size=micro_batch_size, tp=tp, dtype=dtype,
                            sequence_parallel=sequence_parallel, cache=cache)
        return cache.get("tables", (*whole.key, "cp", cp), lambda: split_table(whole, profile, cp))
    key = (cache.fingerprint(profile), micro_batch_size, tp, dtype, sequence_parallel)
    return cache.get("tables", key, lambda: _build(profile, micro_batch_size, tp, dtype, sequence_parallel, key))


def _build(profile: Profile, mbs: int, tp: int, dtype: str, sp: bool, key: tuple) -> LayerTable:
    timings = [layer.timing(mbs) for layer in profile.layers]
    roles = tuple(layer.role for layer in profile.layers)
    r = profile.tp / tp
    e_prof, e = DTYPE_BYTES[profile.dtype], DTYPE_BYTES[dtype]
    byte_ratio = e / e_prof  # the profile's bytes are in its own dtype; training may use another
    spec = profile.spec or {}
    s = profile.seq_len
    hidden = int(spec.get("hidden_size") or _infer_hidden(profile, timings, mbs))
    heads = int(spec.get("num_heads") or max(1, hidden // DEFAULT_HEAD_DIM))
    sbh = mbs * s * hidden
    profile_sp = _made_with_sequence_parallel(profile, timings, sbh * e_prof)
    # Korthikanti's replicated terms: 2 norm inputs, QKV and MLP inputs (4 elements per s*b*h) plus, for
    # the LayerNorm (GPT) family of analytic profiles, two 1-byte dropout masks. pptune's torch blocks
    # have no dropout, so measured profiles get none.
    drop = 2 if (spec.get("norm", "layernorm") == "layernorm" and profile.source == "analytic") else 0
    replicated_full = sbh * (4 * e_prof + drop)
    # Attention scores (softmax output, dropout mask and output) that unfused attention saves per block.
    scores_full = heads * s * s * mbs * (2 * e_prof + drop // 2)
    non_score_sharded_full = 24 * sbh * e_prof // 2  # Korthikanti's 24*s*b*h at 16 bits

    fwd, bwd, wgrad, attn_fwd, saved, attn_saved, out, params, flops = [], [], [], [], [], [], [], [], []
    for layer, t in zip(profile.layers, timings, strict=True):
        role = layer.role
        k_time = r if role in ("block", "head") else 1.0
        k_param = r if role in ("block", "embedding", "head") else 1.0
        fwd.append(t.fwd_ms * k_time)
        bwd.append(t.bwd_ms * k_time)
        # The profile's backward split, else the even split of a GEMM's two gradients (W_SHARE_OF_BACKWARD)
        wgrad.append(W_SHARE_OF_BACKWARD * bwd[-1] if t.bwd_weight_ms is None else t.bwd_weight_ms * k_time)
        flops.append(t.fwd_flops * k_time)
        params.append(round(layer.param_count * k_param))
        if role == "head":  # vocab-parallel logits and the loss's softmax
            saved.append(round(t.saved_bytes * byte_ratio * r))
            out.append(round(t.output_bytes * byte_ratio * r))
            attn_saved.append(0)
            attn_fwd.append(0.0)
            continue
        hidden_out = t.output_bytes * (profile.tp if profile_sp else 1)  # the full [s, b, h] in the profile
        out.append(round(hidden_out * byte_ratio / (tp if sp else 1)))
        if role != "block":
            saved.append(round(t.saved_bytes * byte_ratio))
            attn_saved.append(0)
            attn_fwd.append(0.0)
            continue
        rep_now = min(t.saved_bytes, replicated_full / (profile.tp if profile_sp else 1))
        sharded = (t.saved_bytes - rep_now) * r
        rep = replicated_full / (tp if sp else 1)
        saved.append(round((rep + sharded) * byte_ratio))
        # Selective recompute drops the scores, when the layer saved them (flash attention keeps none).
        leftover = sharded - non_score_sharded_full / tp
        attn_saved.append(round(max(0.0, min(scores_full / tp, leftover)) * byte_ratio))
        # The profile's attention-core time when it has one (analytic, or measured SDPA); else its FLOP share,
        # 4*b*s^2*h of a block's 24*b*s*h^2 + 4*b*s^2*h (Narayanan et al. SC'21).
        attn_fwd.append(t.attn_fwd_ms * k_time if t.attn_fwd_ms > 0 else fwd[-1] * s / (6 * hidden + s))
    emb = next((i for i, ro in enumerate(roles) if ro == "embedding"), None)
    head = next((i for i in range(len(roles) - 1, -1, -1) if roles[i] == "head"), None)
    tied = 0
    if spec.get("tied_embeddings") and emb is not None and head is not None and emb != head:
        # DeepSpeed's TiedLayerSpec builds the whole embedding module again on the head's stage
        # (Megatron-DeepSpeed GPTModelPipe does the same), so the head's copy is the embedding layer's count.
        tied = params[emb]
    return LayerTable(
        micro_batch_size=mbs, tp=tp, fwd_ms=tuple(fwd), bwd_ms=tuple(bwd), bwd_weight_ms=tuple(wgrad),
        attn_fwd_ms=tuple(attn_fwd),
        saved_bytes=tuple(saved), attn_saved_bytes=tuple(attn_saved), output_bytes=tuple(out),
        input_bytes=mbs * s * 8, param_count=tuple(params), tied_param_count=tied, embedding_index=emb,
        head_index=head, kinds=tuple(layer.kind for layer in profile.layers), roles=roles, fwd_flops=tuple(flops),
        hidden_size=hidden, act_bytes=e, profile_source=profile.source, sequence_parallel=sp, key=key,
        cum={name: (0, *accumulate(values)) for name, values in (
            ("fwd_ms", fwd), ("bwd_ms", bwd), ("bwd_weight_ms", wgrad), ("attn_fwd_ms", attn_fwd), ("saved_bytes", saved),
            ("attn_saved_bytes", attn_saved), ("param_count", params),
            ("blocks", [1 if ro == "block" else 0 for ro in roles]))},
    )


def _made_with_sequence_parallel(profile: Profile, timings: list, full_hidden_bytes: int) -> bool:
    """Whether the profile's hidden states are sequence-split (an analytic profile made with SP).

    The schema has no flag for it, so we read it off a block's output: ``[s/t, b, h]`` instead of ``[s, b, h]``.
    """
    if profile.tp == 1:
        return False
    for layer, t in zip(profile.layers, timings, strict=True):
        if layer.role == "block":
            return abs(t.output_bytes * profile.tp - full_hidden_bytes) < abs(t.output_bytes - full_hidden_bytes)
    return False


def _infer_hidden(profile: Profile, timings: list, mbs: int) -> int:
    """Hidden size from a block's output [b, s, h] when the profile carries no spec."""
    for layer, t in zip(profile.layers, timings, strict=True):
        if layer.role == "block" and t.output_bytes:
            return max(1, round(t.output_bytes / (mbs * profile.seq_len * DTYPE_BYTES[profile.dtype])))
    return 1
