"""Per-chunk costs of one configuration: compute, exposed TP communication and the p2p messages between chunks.

Recompute adds forward work to the backward: ``full`` and ``every:K`` re-run every layer's forward once
(DeepSpeed checkpoints each K-layer group and re-runs it in backward, so K changes memory, not time),
``selective`` re-runs the attention core: the profile's ``attn_fwd_ms`` (an analytic profile's
unfused scores are memory-bound, several times their FLOP share), else that FLOP share ``s / (6h + s)``.
TP collectives are not overlapped with compute (Megatron's default), so they lengthen each op;
recompute repeats the forward's collectives.

Pipeline messages: Megatron posts its sends and receives asynchronously (``batch_isend_irecv``), so a
message is a lag between the sender's op and the receiver's. DeepSpeed's pipeline engine sends and receives
synchronously (``deepspeed.runtime.pipe.p2p.send`` asserts ``async_op == False``; a blocking NCCL send holds
the sender's stream until the transfer is done), so there the transfer is part of the sender's op
(``blocking_sends``): a forward ends with sending its output downstream, a backward with sending its input
gradient upstream, and the receiver has the message when that op ends.

With tensor parallelism DeepSpeed partitions each message over the tp ranks (``pipe_partitioned`` and
``grad_partitioned``, on by default and in pptune's ds_config; they act whenever the PipelineModule has a
model-parallel grid, as Megatron-DeepSpeed's has): each rank sends 1/tp of it, and the receiving op first
all-gathers the whole tensor over its tp group (``PartitionedTensor.full`` inside the forward, and inside the
backward for gradients). That all-gather is TP communication of the receiving chunk, not repeated by recompute.
"""

from __future__ import annotations

from dataclasses import dataclass

from pptune.cost import comm
from pptune.cost.layers import LayerTable
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig


@dataclass(frozen=True, kw_only=True, slots=True)
class ChunkCosts:
    """Per micro-batch costs of each chunk (index = global chunk) and of each chunk boundary."""

    compute_fwd_ms: tuple[float, ...]
    compute_bwd_ms: tuple[float, ...]  # recompute included
    weight_grad_ms: tuple[float, ...]  # the W share of the backward (zb_h1), no recompute, no comm
    tp_fwd_ms: tuple[float, ...]
    tp_bwd_ms: tuple[float, ...]
    p2p_ms: tuple[float, ...]  # boundary c -> c + 1, one message each way
    p2p_bytes: tuple[int, ...]
    fwd_ms: tuple[float, ...]  # what a forward op takes: compute + exposed TP communication
    bwd_ms: tuple[float, ...]


def chunk_costs(table: LayerTable, boundaries: tuple[int, ...], config: ParallelConfig, cluster: Cluster,
                *, seq_len: int, w_share: float) -> ChunkCosts:
    """Costs of every chunk of ``boundaries`` under ``config`` on ``cluster``."""
    interval = config.recompute_interval
    selective = config.recompute == "selective"
    message = config.micro_batch_size * seq_len * table.hidden_size * table.act_bytes
    tp_per_stage: list[dict[str, tuple[float, float]]] = []
    one_link: list[comm.Link] = []
    if config.tp > 1:
        per_link: dict[comm.Link, dict[str, tuple[float, float]]] = {}
        for s in range(config.pp):
            link = comm.tp_link(cluster, tp=config.tp, dp=config.dp, stage=s)
            if link not in per_link:
                per_link[link] = {role: comm.tp_layer_ms(role, message, config.tp, link,
                                                           sequence_parallel=config.sequence_parallel)
                                  for role in comm.TP_COLLECTIVES}
            tp_per_stage.append(per_link[link])
            one_link.append(link)
    partitioned = partitioned_sends(config)
    cf, cb, ww, tf, tb = [], [], [], [], []
    emb, head = table.embedding_index, table.head_index
    for c in range(len(boundaries) - 1):
        first, last = boundaries[c], boundaries[c + 1]
        fwd = table.total("fwd_ms", first, last)
        bwd = table.total("bwd_ms", first, last)
        extra = fwd if interval else (table.total("attn_fwd_ms", first, last) if selective else 0.0)
        t_f = t_b = 0.0
        if config.tp > 1:
            one = tp_per_stage[c % config.pp]
            blocks = table.total("blocks", first, last)
            t_f, t_b = blocks * one["block"][0], blocks * one["block"][1]
            for index, role in ((emb, "embedding"), (head, "head")):
                if index is not None and first <= index < last:
                    t_f += one[role][0]
                    t_b += one[role][1]
            if interval:
                t_b += t_f
            if partitioned:  # the receiver gathers each partitioned message over its tp group
                if c > 0:
                    t_f += comm.all_gather_ms(table.output_bytes[boundaries[c] - 1], config.tp, one_link[c % config.pp])
                if c < len(boundaries) - 2:
                    t_b += comm.all_gather_ms(table.output_bytes[last - 1], config.tp, one_link[c % config.pp])
        cf.append(fwd)
        cb.append(bwd + extra)
        ww.append(w_share * bwd)
        tf.append(t_f)
        tb.append(t_b)
    p2p, p2p_bytes = _p2p(table, boundaries, config, cluster)
    return ChunkCosts(compute_fwd_ms=tuple(cf), compute_bwd_ms=tuple(cb), weight_grad_ms=tuple(ww),
                      tp_fwd_ms=tuple(tf), tp_bwd_ms=tuple(tb), p2p_ms=p2p, p2p_bytes=p2p_bytes,
                      fwd_ms=tuple(a + b for a, b in zip(cf, tf, strict=True)),
                      bwd_ms=tuple(a + b for a, b in zip(cb, tb, strict=True)))


def _p2p(table: LayerTable, boundaries: tuple[int, ...], config: ParallelConfig,
         cluster: Cluster) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Message time per chunk boundary: the chunk's last output (per tp rank; 1/tp with sequence parallel).

    DeepSpeed with tp > 1 sends 1/tp of the activation from each rank (``partitioned_sends``; the receiver's
    all-gather is in ``chunk_costs``). Megatron with sequence parallelism sends the sequence-sharded
    ``[s/t, b, h]``, without it the whole activation from every tp rank.
    """
    pp = config.pp
    parts = config.tp if partitioned_sends(config) else 1
    times, sizes = [], []
    for c in range(len(boundaries) - 2):
        nbytes = table.output_bytes[boundaries[c + 1] - 1] / parts  # already 1/tp under sequence parallelism
        stage = c % pp
        if stage == pp - 1:  # interleaving wraps from the last stage back to the first
            link = comm.first_last_link(cluster, tp=config.tp, dp=config.dp, pp=pp)
        else:
            link = comm.stage_pair_link(cluster, tp=config.tp, dp=config.dp, stage=stage)
        times.append(comm.p2p_ms(nbytes, link))
        sizes.append(round(nbytes))
    return tuple(times), tuple(sizes)


# Engines whose pipeline sends block the sender until the transfer is done (see the module docstring).
BLOCKING_SENDS = frozenset({"deepspeed"})


def partitioned_sends(config: ParallelConfig) -> bool:
    """Whether each pipeline message is split over the tp ranks and gathered by the receiver (DeepSpeed, tp > 1)."""
    return config.target == "deepspeed" and config.tp > 1


def blocking_sends(fwd_ms: tuple[float, ...], bwd_ms: tuple[float, ...],
                   p2p_ms: tuple[float, ...]) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(forward, backward, lags) per chunk when each send is part of its sender's op: no lag left."""
    n = len(fwd_ms)
    fwd = tuple(f + p2p_ms[c] if c < n - 1 else f for c, f in enumerate(fwd_ms))
    bwd = tuple(b + p2p_ms[c - 1] if c > 0 else b for c, b in enumerate(bwd_ms))
    return fwd, bwd, (0.0,) * len(p2p_ms)
