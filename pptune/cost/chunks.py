"""Per-chunk and per-stage costs of K configurations of one pipeline shape (pp, vpp), as numpy arrays.

The one implementation of these formulas: ``estimate()`` evaluates one row, ``estimate_many()`` thousands.
Rows are configurations, columns chunks (or chunk boundaries, or stages).

Recompute adds forward work to the backward (``recompute_extra``): ``full`` and ``every:K`` re-run every
layer's forward once (DeepSpeed checkpoints each K-layer group and re-runs it in backward, so K changes
memory, not time), ``selective`` re-runs the attention core: the profile's ``attn_fwd_ms`` (an analytic
profile's unfused scores are memory-bound, several times their FLOP share). TP collectives are not
overlapped with compute (Megatron's default), so they lengthen each op; recompute repeats the forward's
collectives.

Pipeline messages: Megatron posts its sends and receives asynchronously (``batch_isend_irecv``), so a
message is a lag between the sender's op and the receiver's. DeepSpeed's pipeline engine sends and receives
synchronously (``deepspeed.runtime.pipe.p2p.send`` asserts ``async_op == False``; a blocking NCCL send holds
the sender's stream until the transfer is done, and a send cannot complete before its receiver posts the
receive): there each message is a rendezvous of the sender's ``SendActivation``/``SendGrad`` and the receiver's
``RecvActivation``/``RecvGrad`` at the points TrainSchedule issues them (``pipeline_schedule``, simulated by
``compiled.compile_rendezvous``; for uniform stages it adds about (2m - 3) transfers to the step for pp >= 3).

With tensor parallelism DeepSpeed partitions each message over the tp ranks (``pipe_partitioned`` and
``grad_partitioned``, on by default and in pptune's ds_config; they act whenever the PipelineModule has a
model-parallel grid, as Megatron-DeepSpeed's has): each rank sends 1/tp of it, and the receiving op first
all-gathers the whole tensor over its tp group (``PartitionedTensor.full`` inside the forward, and inside the
backward for gradients). That all-gather is TP communication of the receiving chunk, not repeated by recompute.

Activations per chunk (what ``pptune.cost.memory`` multiplies by the in-flight micro-batches): the saved
tensors (less the attention scores with selective recompute), or with checkpoints each group's input plus
the largest group's saved set while it is recomputed; DeepSpeed's engine also holds each stage's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pptune.cost import comm, context_parallel
from pptune.cost.cache import CostCache
from pptune.cost.layers import LayerTable
from pptune.cost.memory import grouped_checkpoint_bytes
from pptune.cost.orders import RENDEZVOUS_1F1B
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.targets import rules_for


@dataclass(frozen=True, slots=True, eq=False)
class TableArrays:
    """A LayerTable's prefix sums and per-layer values as numpy arrays (length n + 1 for prefix sums)."""

    table: LayerTable
    floats: np.ndarray  # (n + 1, 4) prefix sums of fwd_ms, bwd_ms, attn_fwd_ms, bwd_weight_ms (one gather serves all)
    ints: np.ndarray  # (n + 1, 4) prefix sums of saved_bytes, attn_saved_bytes, group input bytes, blocks
    out: np.ndarray  # per layer output bytes
    saved_max_padded: np.ndarray  # sparse table (levels, n): [k, i] = max(saved_bytes[i : i + 2**k]), 0-padded


FLOATS = ("fwd", "bwd", "attn", "wgrad")
INTS = ("saved", "attn_saved", "group_input", "blocks")  # group_input: what a one-layer checkpoint keeps


def table_arrays(table: LayerTable, cache: CostCache) -> TableArrays:
    """The arrays of ``table``, kept in ``cache`` by what the table was built from."""
    return cache.get("table_arrays", table.key, lambda: _build(table))


def _build(table: LayerTable) -> TableArrays:
    cum = table.cum
    saved = np.array(table.saved_bytes, dtype=np.int64)
    n = len(saved)
    levels = [saved]
    while 2 ** len(levels) <= n:
        half = 2 ** (len(levels) - 1)
        levels.append(np.maximum(levels[-1][:-half], levels[-1][half:]))
    # Every table of a model has the same layer count, so the padded tables stack (8 levels for 255 layers).
    padded = np.zeros((max(8, len(levels)), n), dtype=np.int64)
    for k, row in enumerate(levels):
        padded[k, :len(row)] = row
    group_input = [table.input_bytes] + list(table.output_bytes[:-1])
    floats = np.array([cum["fwd_ms"], cum["bwd_ms"], cum["attn_fwd_ms"], cum["bwd_weight_ms"]], dtype=np.float64).T
    ints = np.array([cum["saved_bytes"], cum["attn_saved_bytes"],
                     np.concatenate(([0], np.cumsum(np.array(group_input, dtype=np.int64)))), cum["blocks"]],
                    dtype=np.int64).T
    return TableArrays(table=table, floats=np.ascontiguousarray(floats), ints=np.ascontiguousarray(ints),
                       out=np.array(table.output_bytes, dtype=np.int64), saved_max_padded=padded)


def _stacked(distinct: list[TableArrays], cache: CostCache) -> dict[str, np.ndarray]:
    """The distinct tables' arrays stacked (first axis: table), kept in ``cache`` per table set."""
    return cache.get("stacks", tuple(a.table.key for a in distinct), lambda: {
        name: np.stack([getattr(a, name) for a in distinct]) for name in ("floats", "ints", "out", "saved_max_padded")})


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupChunks:
    """Arrays of K configurations of one pipeline shape: (K, chunks), (K, chunks - 1) or (K, pp)."""

    fwd_ms: np.ndarray  # what a forward op takes: compute + exposed TP communication
    bwd_ms: np.ndarray
    weight_grad_ms: np.ndarray
    p2p_ms: np.ndarray
    compute_ms: np.ndarray  # (K, pp): m * (forward + backward compute), summed over the stage's chunks
    tp_comm_ms: np.ndarray  # (K, pp)
    cp_comm_ms: np.ndarray  # (K, pp) exposed context-parallel ring (pptune.cost.context_parallel)
    kept_bytes: np.ndarray  # (K, pp) largest per-micro-batch activations of a chunk of the stage
    work_bytes: np.ndarray  # (K, pp) largest recompute working set of a chunk of the stage
    head_stage: np.ndarray  # (K,) stage holding the head, -1 if none


def group_chunks(configs: list[ParallelConfig], row_tables: list[TableArrays], bounds: np.ndarray, cluster: Cluster,
                 *, seq_len: int, cache: CostCache, w_share: float | None = None) -> GroupChunks:
    """Costs of K configurations sharing pp and vpp (tp and dp may differ from row to row).

    Args:
        configs: the K configurations.
        row_tables: the layer table of each configuration (its micro-batch size, dtype, sequence parallelism).
        bounds: (K, pp * vpp + 1) chunk boundaries.
        cluster: the hardware (links by rank placement).
        seq_len: the profile's sequence length.
        w_share: the weight-gradient share of the backward (zb_h1's W), for what-if studies; None: each layer's
            ``LayerTable.bwd_weight_ms`` (the profile's measured split, else ``schedule.W_SHARE_OF_BACKWARD``).
        cache: keeps stacked tables and link tables for later calls.
    """
    pp = configs[0].pp
    k, chunks = bounds.shape[0], bounds.shape[1] - 1
    layouts = [(c.tp, c.dp_cp) for c in configs]  # placement: dp x cp is one stride-tp group (tp-cp-dp-pp)
    distinct_layouts = list(dict.fromkeys(layouts))
    layout_of = {x: i for i, x in enumerate(distinct_layouts)}
    row_layout = np.array([layout_of[x] for x in layouts])
    distinct = list({id(a): a for a in row_tables}.values())
    where = {id(a): i for i, a in enumerate(distinct)}
    t = np.array([where[id(a)] for a in row_tables])[:, None]
    first, last = bounds[:, :-1], bounds[:, 1:]

    stacks = _stacked(distinct, cache)
    links = cache.fingerprint(cluster)
    floats, ints = stacks["floats"], stacks["ints"]
    # Each prefix sum's difference over every chunk, (K, chunks): one gather per matrix.
    diff = {**dict(zip(FLOATS, np.moveaxis(floats[t, last] - floats[t, first], 2, 0), strict=True)),
            **dict(zip(INTS, np.moveaxis(ints[t, last] - ints[t, first], 2, 0), strict=True))}

    def per_row(values: list) -> np.ndarray:
        return np.array(values)[t]

    interval = np.array([c.recompute_interval for c in configs])[:, None]
    selective = np.array([c.recompute == "selective" for c in configs])[:, None]
    m = np.array([c.num_microbatches for c in configs])[:, None]
    fwd, bwd = diff["fwd"], diff["bwd"]
    cf = fwd
    cb = backward_ms(fwd, bwd, diff["attn"], interval, selective)
    emb = per_row([-1 if a.table.embedding_index is None else a.table.embedding_index for a in distinct])
    head = per_row([-1 if a.table.head_index is None else a.table.head_index for a in distinct])
    emb_in = (emb >= 0) & (first <= emb) & (emb < last)
    head_in = (head >= 0) & (first <= head) & (head < last)
    if any(tp > 1 for tp, _ in distinct_layouts):  # tp = 1 rows: no TP collectives (zeros)
        tf, tb = _tp_comm(row_tables, diff["blocks"], emb_in, head_in, cluster, seq_len, distinct_layouts, row_layout,
                          pp, cache, links)
        tb = np.where(interval > 0, tb + tf, tb)
    else:
        tf = tb = np.zeros((k, chunks))
    # Context parallelism's K,V ring per attention (zeros for cp = 1); full recompute re-runs the forward's ring.
    cpf, cpb = context_parallel.ring_chunks(configs, [a.table for a in row_tables], bounds, cluster, cache=cache,
                                            links=links)
    cpb = np.where(interval > 0, cpb + cpf, cpb)
    # Activations per chunk: saved tensors (less the attention scores with selective recompute), or with one-layer
    # checkpoints each layer's input plus the largest layer's saved set (K-layer groups below).
    kept = np.where(interval == 0, diff["saved"] - np.where(selective, diff["attn_saved"], 0), diff["group_input"])
    if (interval > 0).any():
        work = np.where(interval == 0, 0, _range_max(stacks["saved_max_padded"], t, first, last))
    else:  # no checkpointed chunk: no recompute working set
        work = np.zeros((k, chunks), dtype=np.int64)
    for i in np.flatnonzero(interval[:, 0] > 1):  # every:K with K > 1: groups of K layers, chunk by chunk
        for c in range(chunks):
            kept[i, c], work[i, c] = grouped_checkpoint_bytes(row_tables[i].table, int(first[i, c]), int(last[i, c]),
                                                              int(interval[i, 0]))
    keeps_output = np.array([keeps_stage_output(c) for c in configs])[:, None]
    tp_row = np.array([c.tp for c in configs])[:, None]
    if keeps_output.any():  # DeepSpeed keeps each stage's output buffer (1/tp of it when tp > 1), Megatron nothing
        n = per_row([a.table.num_layers for a in distinct])
        kept = kept + np.where(keeps_output & (last < n), stacks["out"][t, last - 1] // tp_row, 0)
    nbytes = stacks["out"][t, bounds[:, 1:-1] - 1]  # each chunk's last output (1/tp with sequence parallelism)
    parted = np.array([partitioned_sends(c) for c in configs])
    if parted.any() and chunks > 1:  # 1/tp over the link, and the receiving op all-gathers it
        gather = _partition_gathers(nbytes, cluster, distinct_layouts, row_layout, pp, cache, links)  # (2, K, chunks - 1)
        tf = tf + np.pad(np.where(parted[:, None], gather[0], 0.0), ((0, 0), (1, 0)))
        tb = tb + np.pad(np.where(parted[:, None], gather[1], 0.0), ((0, 0), (0, 1)))
        nbytes = np.where(parted[:, None], nbytes / tp_row, nbytes)
    return GroupChunks(
        fwd_ms=cf + tf + cpf, bwd_ms=cb + tb + cpb, weight_grad_ms=diff["wgrad"] if w_share is None else w_share * bwd, p2p_ms=_p2p(nbytes, cluster, distinct_layouts, row_layout, pp,
                                                                           cache, links),
        compute_ms=_per_stage(m * (cf + cb), pp), tp_comm_ms=_per_stage(m * (tf + tb), pp),
        cp_comm_ms=_per_stage(m * (cpf + cpb), pp),
        kept_bytes=_per_stage(kept, pp, np.maximum),
        work_bytes=_per_stage(work, pp, np.maximum),
        head_stage=np.where(head_in.any(axis=1), head_in.argmax(axis=1) % pp, -1),
    )


def backward_ms(fwd: np.ndarray, bwd: np.ndarray, attn_fwd: np.ndarray, interval: np.ndarray,
                selective: np.ndarray) -> np.ndarray:
    """Backward compute with recompute: a checkpointed layer re-runs its forward, selective its attention core."""
    return bwd + np.where(interval > 0, fwd, np.where(selective, attn_fwd, 0.0))


def partitioned_sends(config: ParallelConfig) -> bool:
    """Whether each pipeline message is split over the tp ranks and gathered by the receiver (DeepSpeed, tp > 1)."""
    return config.tp > 1 and rules_for(config.target, config.pp).partitioned_sends


def keeps_stage_output(config: ParallelConfig) -> bool:
    """Whether the engine holds each in-flight micro-batch's stage output until its backward (DeepSpeed's pipe
    engine; with tp > 1 its 1/tp part, since pipe_partitioned replaces the tensor's data by the partition)."""
    return rules_for(config.target, config.pp).keeps_stage_output


def pipeline_schedule(config: ParallelConfig) -> str:
    """The schedule shape that simulates ``config``'s pipeline: DeepSpeed's blocking messages (pp > 1) run as
    ``orders.RENDEZVOUS_1F1B`` (each transfer holds its sender and receiver once both reach it), others as
    their schedule with each message a lag."""
    if config.pp > 1 and config.schedule == "1f1b" and rules_for(config.target, config.pp).blocking_sends:
        return RENDEZVOUS_1F1B
    return config.schedule


def _per_stage(x: np.ndarray, pp: int, combine=np.add) -> np.ndarray:
    """Combine chunk columns c, c + pp, ... into stage c's column, in chunk order (as the scalar loops add)."""
    out = x[:, :pp].copy()
    for v in range(pp, x.shape[1], pp):
        combine(out, x[:, v:v + pp], out=out)
    return out


def _range_max(tables: np.ndarray, t: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """max(saved_bytes[first:last]) per chunk from the sparse tables ``(T, levels, n)`` (0 for an empty chunk)."""
    length = last - first
    level = np.floor(np.log2(np.maximum(length, 1))).astype(np.int64)
    a = tables[t, level, first]
    b = tables[t, level, np.maximum(last - (1 << level), 0)]
    return np.where(length > 0, np.maximum(a, b), 0)


def _tp_comm(row_tables, blocks, emb_in, head_in, cluster, seq_len, layouts, row_layout, pp, cache, links):
    """Exposed TP collectives per chunk (forward, backward), added in this order: blocks, embedding, head.

    ``layouts``: the distinct (tp, dp) of the rows, ``row_layout`` each row's index into it (tp = 1: zeros). The TP
    collectives of each stage are kept in ``cache`` per (cluster, tp, dp, pp, message bytes, sequence parallel)."""
    chunks = blocks.shape[1]
    roles = ("block", "embedding", "head")

    def build(tp: int, dp: int, message: int, sp: bool) -> np.ndarray:  # (direction, role, stage)
        if tp == 1:
            value = np.zeros((2, len(roles), pp))
        else:
            links = [comm.tp_link(cluster, tp=tp, dp=dp, stage=s) for s in range(pp)]
            distinct_links = list(dict.fromkeys(links))
            link_of_stage = np.array([distinct_links.index(link) for link in links])
            per_link = np.array([[comm.tp_layer_ms(r, message, tp, link, sequence_parallel=sp) for r in roles]
                                 for link in distinct_links])  # (link, role, direction)
            value = per_link.transpose(2, 1, 0)[:, :, link_of_stage]
        return value

    def by_stage(tp: int, dp: int, message: int, sp: bool) -> np.ndarray:
        return cache.get("tp_stages", (links, tp, dp, pp, message, sp), lambda: build(tp, dp, message, sp))

    # The message and the collectives depend only on the layer table (micro-batch size, dtype, sequence
    # parallelism) and the layout: once per distinct pair.
    pairs: dict[tuple, int] = {}
    row_pair = np.empty(len(row_tables), dtype=np.int64)
    arrays = []
    for i, (a, lay) in enumerate(zip(row_tables, row_layout.tolist(), strict=True)):
        key = (id(a), lay)
        j = pairs.get(key)
        if j is None:
            j = pairs[key] = len(arrays)
            tp, dp = layouts[lay]
            t = a.table
            tokens = t.micro_batch_size * seq_len // t.cp  # a context-parallel rank's tokens
            arrays.append(by_stage(tp, dp, tokens * t.hidden_size * t.act_bytes, t.sequence_parallel))
        row_pair[i] = j
    values = np.stack(arrays)[..., np.arange(chunks) % pp][row_pair]
    out = []
    for d in (0, 1):
        x = blocks * values[:, d, 0]
        x = x + np.where(emb_in, values[:, d, 1], 0.0)
        x = x + np.where(head_in, values[:, d, 2], 0.0)
        out.append(x)
    return out[0], out[1]


def _partition_gathers(nbytes: np.ndarray, cluster: Cluster, layouts: list[tuple[int, int]],
                       row_layout: np.ndarray, pp: int, cache: CostCache, links: str) -> np.ndarray:
    """All-gather of each boundary's message over the receiver's tp group: (forward on chunk c + 1, backward on c).

    As ``comm.all_gather_ms`` with the tp link of the receiving chunk's stage; rows with tp = 1 get zeros. Each
    receiving stage's tp-link latency term and bytes per ms are kept in ``cache`` per (cluster, tp, dp, pp,
    boundaries)."""
    boundaries = nbytes.shape[1]
    lat = np.zeros((2, len(layouts), boundaries))
    per_ms = np.ones((2, len(layouts), boundaries))
    share = np.zeros((len(layouts), 1))
    for i, (tp, dp) in enumerate(layouts):
        if tp == 1:
            continue
        def build(tp: int = tp, dp: int = dp) -> tuple[list[list[float]], list[list[float]]]:
            stage_links = [comm.tp_link(cluster, tp=tp, dp=dp, stage=s) for s in range(pp)]
            # forward: received by chunk c + 1; backward: by chunk c
            stages = [[stage_links[(c + offset) % pp] for c in range(boundaries)] for offset in (1, 0)]
            return [[(tp - 1) * x.step_latency_ms for x in st] for st in stages], [[x.gbps * 1e6 for x in st] for st in stages]

        lat[:, i], per_ms[:, i] = cache.get("gather_links", (links, tp, dp, pp, boundaries), build)
        share[i] = (tp - 1) / tp
    out = share[row_layout] * (nbytes / per_ms[:, row_layout]) + lat[:, row_layout]
    return np.where(nbytes > 0, out, 0.0)


def _p2p(nbytes: np.ndarray, cluster: Cluster, layouts: list[tuple[int, int]], row_layout: np.ndarray,
         pp: int, cache: CostCache, links: str) -> np.ndarray:
    """p2p time per chunk boundary: latency + bytes / bandwidth, 0 for an empty message.

    ``layouts``: the distinct (tp, dp) of the rows, ``row_layout`` each row's index into it. Each boundary's link
    latency and bytes per ms are kept in ``cache`` per (cluster, tp, dp, pp, boundaries)."""
    lat, per_ms = [], []
    for tp, dp in layouts:
        def build(tp: int = tp, dp: int = dp) -> tuple[list[float], list[float]]:
            hops = [comm.first_last_link(cluster, tp=tp, dp=dp, pp=pp) if c % pp == pp - 1  # interleaving wraps
                    else comm.stage_pair_link(cluster, tp=tp, dp=dp, stage=c % pp) for c in range(nbytes.shape[1])]
            return [x.latency_ms for x in hops], [x.gbps * 1e6 for x in hops]

        a, b = cache.get("p2p_links", (links, tp, dp, pp, nbytes.shape[1]), build)
        lat.append(a)
        per_ms.append(b)
    return np.where(nbytes > 0, np.array(lat)[row_layout] + nbytes / np.array(per_ms)[row_layout], 0.0)
