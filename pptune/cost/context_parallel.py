"""Context parallelism (Megatron ``--context-parallel-size``): one rank's share of a layer table, and the ring
exchange of keys and values that attention needs.

Each sequence is split over the cp ranks of a group; every module but attention works on its own tokens, so a
rank's compute, FLOPs, saved activations, stage messages and TP collectives are 1/cp of the cp = 1 table's
(Megatron's context_parallel.md, NVIDIA/Megatron-LM d98e8a6: "each GPU computes on part of the sequence, which
scales down both compute and communication by the CP degree"). Causal attention is balanced too: the sequence is
cut into 2 x cp chunks and rank r keeps chunks r and 2cp - 1 - r (hence seq divisible by 2 x cp,
``pptune.target_checks.context_parallel_seq_rule``), so every rank does 1/cp of the causal attention work. Kernel
efficiency at the shorter per-rank sequence is not modelled (a linear 1/cp).

The ring (TransformerEngine ``AttnFuncWithCPAndKVP2P``, transformer_engine/pytorch/attention/dot_product_attention/
context_parallel.py, NVIDIA/TransformerEngine d0067d0): attention runs in cp steps; while step i computes with
the K,V block it holds, the block for step i + 1 travels from the previous rank (``flash_attn_p2p_communicate``,
one send and one receive per rank per step), so cp - 1 transfers each overlap one step of attention. The backward
sends K,V and the accumulated dK,dV of each block (twice the bytes) over the same ring, beside the attention
backward (taken as twice its forward, the FLOP ratio). Per block and micro-batch:

    forward  = (cp - 1) * max(0, p2p(kv) - attention_fwd / cp)
    backward = (cp - 1) * max(0, p2p(2 kv) - 2 attention_fwd / cp)

with ``kv = mbs * (s / cp) * 2 * (kv_heads / tp) * head_dim * bytes`` (GQA sends only its KV heads) and
``attention_fwd`` the rank's attention-core forward (``LayerTable.attn_fwd_ms``). Full recompute repeats the
forward ring in the backward, as it repeats the TP collectives.

Placement: Megatron's rank order is tp-cp-ep-dp-pp (``initialize_model_parallel(order=...)``,
megatron/core/parallel_state.py, d98e8a6): a cp group is cp ranks ``tp`` apart; the ring runs at the inter-node
rate when any group of the stage spans nodes (its slowest hop), as ``pptune.cost.comm`` treats every ring.
"""

from __future__ import annotations

import dataclasses
from itertools import accumulate
from typing import TYPE_CHECKING

import numpy as np

from pptune.cost import comm
from pptune.cost.cache import CostCache
from pptune.hardware import Cluster

if TYPE_CHECKING:
    from pptune.cost.layers import LayerTable
    from pptune.profile.schema import Profile

# LayerTable fields that count tokens: one rank holds 1/cp of each. Parameters and element sizes do not change.
_PER_TOKEN = ("fwd_ms", "bwd_ms", "attn_fwd_ms", "saved_bytes", "attn_saved_bytes", "output_bytes", "fwd_flops")
# zero-bubble's weight-gradient split, when the table has it (another part of the cost model may add it)
_PER_TOKEN_OPTIONAL = ("bwd_input_ms", "bwd_weight_ms", "weight_grad_ms")


def split_table(table: LayerTable, profile: Profile, cp: int) -> LayerTable:
    """One context-parallel rank's LayerTable: every per-token field of the cp = 1 ``table`` divided by ``cp``."""
    fields = {f.name for f in dataclasses.fields(table)}
    changes: dict = {}
    for name in _PER_TOKEN + tuple(n for n in _PER_TOKEN_OPTIONAL if n in fields):
        values = getattr(table, name)
        integer = bool(values) and isinstance(values[0], int)
        changes[name] = tuple(round(v / cp) if integer else v / cp for v in values)
    changes["input_bytes"] = round(table.input_bytes / cp)
    spec = profile.spec or {}
    heads = int(spec.get("num_heads") or max(1, table.hidden_size // 64))
    kv_heads = int(spec.get("num_kv_heads") or heads)
    head_dim = table.hidden_size // heads
    tokens = table.micro_batch_size * profile.seq_len // cp
    changes["kv_block_bytes"] = tokens * 2 * max(1, kv_heads // table.tp) * head_dim * table.act_bytes
    cum = dict(table.cum)
    for name in cum:
        if name in changes:
            cum[name] = (0, *accumulate(changes[name]))
    return dataclasses.replace(table, **changes, cum=cum, cp=cp, key=(*table.key, "cp", cp))


def cp_far(gpus_per_node: int, *, tp: int, cp: int, dp: int, stage: int) -> bool:
    """Whether any cp group of the stage spans nodes: ranks ``stage*tp*cp*dp + d*tp*cp + m + j*tp`` (j < cp)."""
    base = stage * tp * cp * dp
    return any(comm.spans_nodes(base + d * tp * cp + m, stride=tp, size=cp, gpus_per_node=gpus_per_node)
               for d in range(min(dp, gpus_per_node)) for m in range(min(tp, gpus_per_node)))


def cp_link(cluster: Cluster, *, tp: int, cp: int, dp: int, stage: int) -> comm.Link:
    """The ring's link for the stage's cp groups (inter-node when any of them spans nodes)."""
    far = cp_far(cluster.gpus_per_node, tp=tp, cp=cp, dp=dp, stage=stage)
    return comm.inter(cluster) if far else comm.intra(cluster)


def ring_block_ms(kv_bytes: float, attn_fwd_ms: float, cp: int, link: comm.Link) -> tuple[float, float]:
    """(forward, backward) exposed ring time of one attention block per micro-batch (module docstring)."""
    if cp <= 1:
        return 0.0, 0.0
    fwd = (cp - 1) * max(0.0, comm.p2p_ms(kv_bytes, link) - attn_fwd_ms / cp)
    bwd = (cp - 1) * max(0.0, comm.p2p_ms(2 * kv_bytes, link) - 2 * attn_fwd_ms / cp)
    return fwd, bwd


def ring_chunks(configs: list, tables: list[LayerTable], bounds: np.ndarray, cluster: Cluster, *,
                cache: CostCache, links: str) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward) exposed ring time per chunk and micro-batch, (K, chunks); zeros for cp = 1 rows.

    Per distinct (table, tp, cp, dp, pp): the per-layer ring time on each stage's link as prefix sums (kept in
    ``cache``), so a chunk's time is one difference, as ``pptune.cost.chunks`` sums layer costs."""
    k, chunks = bounds.shape[0], bounds.shape[1] - 1
    fwd, bwd = np.zeros((k, chunks)), np.zeros((k, chunks))
    first, last = bounds[:, :-1], bounds[:, 1:]
    for i, (c, t) in enumerate(zip(configs, tables, strict=True)):
        if c.cp <= 1:
            continue
        prefix, stage_link = cache.get("cp_ring", (t.key, c.tp, c.cp, c.dp, c.pp, links),
                                       lambda c=c, t=t: _ring_prefix(t, c, cluster))
        lk = stage_link[np.arange(chunks) % c.pp]
        fwd[i] = prefix[0, lk, last[i]] - prefix[0, lk, first[i]]
        bwd[i] = prefix[1, lk, last[i]] - prefix[1, lk, first[i]]
    return fwd, bwd


def _ring_prefix(t: LayerTable, c, cluster: Cluster) -> tuple[np.ndarray, np.ndarray]:
    """((direction, link, n + 1) prefix sums of the blocks' ring time, each stage's index into the links)."""
    stage_links = [cp_link(cluster, tp=c.tp, cp=c.cp, dp=c.dp, stage=s) for s in range(c.pp)]
    distinct = list(dict.fromkeys(stage_links))
    per_layer = np.array([[ring_block_ms(t.kv_block_bytes, a, c.cp, link) if role == "block" else (0.0, 0.0)
                           for a, role in zip(t.attn_fwd_ms, t.roles, strict=True)] for link in distinct])
    prefix = np.concatenate([np.zeros((len(distinct), 1, 2)), np.cumsum(per_layer, axis=1)], axis=1)
    return prefix.transpose(2, 0, 1), np.array([distinct.index(x) for x in stage_links])
