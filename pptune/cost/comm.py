"""Communication times: alpha-beta costs per link level and the rank placement of DeepSpeed and Megatron.

Placement: both engines put tensor parallelism innermost (consecutive ranks), then data parallelism,
then pipeline stages: DeepSpeed's ``PipeModelDataParallelTopology`` has axes ``['pipe', 'data', 'model']``
(last axis varies fastest) and Megatron's default order is ``tp-cp-ep-dp-pp``. So a TP group has stride 1,
a DP group stride ``tp``, and stage ``s`` holds ranks ``[s * tp * dp, (s + 1) * tp * dp)``. A group whose
ranks sit on more than one node runs its ring at the inter-node rate (its slowest hop); a DP ring at its ranks'
share of the node's NICs (``dp_link``).

Costs (Thakur, Rabenseifner & Gropp 2005, ring algorithms; bandwidth per GPU, one direction):
``p2p = alpha + n / bw``, ``all_reduce = 2 (k-1)/k n / bw + 2 (k-1) alpha``,
``reduce_scatter = all_gather = (k-1)/k n / bw + (k-1) alpha`` with ``n`` the full buffer's bytes.
A collective's ``alpha`` is its link's ``collective_latency_us`` per ring step, the p2p latency unless the cluster
gives its own: over gloo on a CPU a ring step inside a training step costs several times a p2p message
(``pptune.probe``: all-reduces between compute), and the tp all-reduces of a small model are mostly that term.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from pptune.hardware import Cluster


@dataclass(frozen=True, kw_only=True, slots=True)
class Link:
    """One link level: bandwidth per GPU per direction (GB/s = 1e9 B/s), p2p latency and per-ring-step latency."""

    gbps: float
    latency_us: float
    collective_latency_us: float | None = None  # one ring step of a collective; None: the p2p latency

    def transfer_ms(self, nbytes: float) -> float:
        return nbytes / (self.gbps * 1e6)

    @property
    def latency_ms(self) -> float:
        return self.latency_us / 1e3

    @property
    def step_latency_ms(self) -> float:
        """The latency of one ring step of a collective (ms)."""
        return (self.latency_us if self.collective_latency_us is None else self.collective_latency_us) / 1e3


def intra(cluster: Cluster) -> Link:
    return Link(gbps=cluster.intra_node_gbps, latency_us=cluster.intra_node_latency_us,
                collective_latency_us=cluster.intra_node_collective_latency_us)


def inter(cluster: Cluster) -> Link:
    return Link(gbps=cluster.inter_node_gbps, latency_us=cluster.inter_node_latency_us,
                collective_latency_us=cluster.inter_node_collective_latency_us)


def _pick(cluster: Cluster, far: bool) -> Link:
    return inter(cluster) if far else intra(cluster)


def spans_nodes(first_rank: int, *, stride: int, size: int, gpus_per_node: int) -> bool:
    """Whether ranks ``first_rank, first_rank + stride, ...`` (``size`` of them) sit on more than one node."""
    return first_rank // gpus_per_node != (first_rank + (size - 1) * stride) // gpus_per_node


# The placement questions below depend only on integers and take O(GPUs per node) steps at most.
def _tp_far(gpn: int, tp: int, dp: int, stage: int) -> bool:
    """Whether a TP group of the stage (ranks ``base + d * tp`` .. ``+ tp - 1``, d < dp) spans nodes."""
    base = stage * tp * dp
    # The groups' first ranks modulo the node size repeat every gpn / gcd(tp, gpn) groups.
    period = gpn // math.gcd(tp, gpn)
    return any(spans_nodes(base + d * tp, stride=1, size=tp, gpus_per_node=gpn) for d in range(min(dp, period)))


def _dp_far(gpn: int, tp: int, dp: int, stage: int) -> bool:
    """Whether a DP group of the stage (ranks ``base + m + k * tp``, k < dp, one per m < tp) spans nodes."""
    base = stage * tp * dp
    # Group m spans nodes iff its first and last rank differ in node; m and m + gpn behave alike.
    return any(spans_nodes(base + m, stride=tp, size=dp, gpus_per_node=gpn) for m in range(min(tp, gpn)))


def _pair_far(gpn: int, first_rank: int, count: int, distance: int) -> bool:
    """Whether any rank ``r`` of ``first_rank .. first_rank + count - 1`` and ``r + distance`` sit on two nodes."""
    if count <= 0 or distance == 0:
        return False
    if distance >= gpn or count >= gpn:
        return True  # some pair straddles a node boundary
    # r and r + distance share a node iff r % gpn + distance < gpn: the largest residue in the range decides.
    last = first_rank + count - 1
    top = gpn - 1 if first_rank // gpn != last // gpn else last % gpn
    return top + distance >= gpn


def tp_link(cluster: Cluster, *, tp: int, dp: int, stage: int) -> Link:
    """The link of stage ``stage``'s TP groups (consecutive ranks; inside a node when tp divides the node).

    A group larger than a node fills whole nodes (``pptune.target_checks.tp_node_rule``), so it is the only group on
    them and its ring leaves each node through the NICs of all the node's GPUs (the mechanism of ``dp_link``):
    the whole node's inter-node bandwidth, at most the NVLink hops' rate, at the inter-node latency.
    """
    gpn = cluster.gpus_per_node
    if tp > gpn:
        return dataclasses.replace(inter(cluster), gbps=min(cluster.intra_node_gbps, gpn * cluster.inter_node_gbps))
    return _pick(cluster, _tp_far(gpn, tp, dp, stage))


def dp_link(cluster: Cluster, *, tp: int, dp: int, stage: int) -> Link:
    """The link of stage ``stage``'s DP groups (ranks ``tp`` apart); inter-node if any of them spans nodes.

    A ring that spans nodes leaves each node through the NICs of its ranks there: NCCL spreads a communicator's
    channels over the NICs next to its GPUs of the node, so a group with ``g`` ranks on every node it touches runs
    at ``g`` GPUs' share of the node's inter-node bandwidth (``inter_node_gbps`` is per GPU), and never faster
    than its NVLink hops. Public nccl-tests figure: all_reduce_perf over two 8 x A100 nodes with 4 x 200 Gb/s
    HDR reached 86 GB/s bus bandwidth where one NIC gives 24 GB/s (NVIDIA/nccl issue #1048). With tp = gpus per
    node (one rank per node) this is the per-GPU rate; tp = 1 gets the whole node's.
    """
    gpn = cluster.gpus_per_node
    if not _dp_far(gpn, tp, dp, stage):
        return intra(cluster)
    share = _dp_ranks_per_node(gpn, tp, dp, stage)
    return dataclasses.replace(inter(cluster), gbps=min(cluster.intra_node_gbps, share * cluster.inter_node_gbps))


def _dp_ranks_per_node(gpn: int, tp: int, dp: int, stage: int) -> int:
    """The fewest ranks any DP group of the stage has on one of its nodes (its ring's narrowest node)."""
    base = stage * tp * dp
    if gpn % tp == 0 and base % gpn == 0:  # aligned: gpn / tp ranks per node, the last node may hold fewer
        per_node = min(gpn // tp, dp)
        rest = dp % per_node
        return min(per_node, rest) if rest else per_node
    fewest = dp
    for m in range(min(tp, gpn)):
        counts: dict[int, int] = {}
        for k in range(dp):
            node = (base + m + k * tp) // gpn
            counts[node] = counts.get(node, 0) + 1
        fewest = min(fewest, min(counts.values()))
    return fewest


def pair_link(cluster: Cluster, *, first_rank: int, count: int, distance: int) -> Link:
    """The link between ranks ``r`` and ``r + distance`` for ``count`` consecutive ``r``: the slowest pair governs."""
    return _pick(cluster, _pair_far(cluster.gpus_per_node, first_rank, count, distance))


def stage_pair_link(cluster: Cluster, *, tp: int, dp: int, stage: int) -> Link:
    """The p2p link from stage ``stage`` to ``stage + 1``: every rank sends to the rank ``tp * dp`` above it."""
    per_stage = tp * dp
    return pair_link(cluster, first_rank=stage * per_stage, count=per_stage, distance=per_stage)


def first_last_link(cluster: Cluster, *, tp: int, dp: int, pp: int) -> Link:
    """The link between the first and the last stage (tied-embedding all-reduce, interleaving's wrap-around)."""
    per_stage = tp * dp
    return pair_link(cluster, first_rank=0, count=per_stage, distance=(pp - 1) * per_stage)


def p2p_ms(nbytes: float, link: Link) -> float:
    """One point-to-point message."""
    return link.latency_ms + link.transfer_ms(nbytes) if nbytes > 0 else 0.0


def all_reduce_ms(nbytes: float, k: int, link: Link) -> float:
    """Ring all-reduce of an ``nbytes`` buffer over ``k`` ranks."""
    if k <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (k - 1) / k * link.transfer_ms(nbytes) + 2 * (k - 1) * link.step_latency_ms


def reduce_scatter_ms(nbytes: float, k: int, link: Link) -> float:
    """Ring reduce-scatter of an ``nbytes`` buffer (each rank keeps 1/k)."""
    if k <= 1 or nbytes <= 0:
        return 0.0
    return (k - 1) / k * link.transfer_ms(nbytes) + (k - 1) * link.step_latency_ms


all_gather_ms = reduce_scatter_ms  # same volume and steps, reversed


# Tensor-parallel collectives per layer and direction, in all-reduces of the layer's [b, s, h] message
# (Megatron, Shoeybi et al. 2019, Fig. 4): a block all-reduces its output twice in forward (attention, MLP)
# and its input gradient twice in backward; the vocab-parallel embedding once in forward; the
# column-parallel LM head once in backward.
TP_COLLECTIVES = {"block": (2, 2), "embedding": (1, 0), "head": (0, 1), "other": (0, 0)}
# Sequence parallelism (Korthikanti et al. 2023) swaps each all-reduce for an all-gather + reduce-scatter,
# each half an all-reduce in the ring model. A column-parallel linear (QKV, MLP-in, LM head) all-gathers its
# sequence-sharded input in forward and, since it saves only its shard, all-gathers it again in backward for
# the weight gradient before reduce-scattering the input gradient (Megatron's
# ``LinearWithGradAccumulationAndAsyncCommunication.backward``); a row-parallel one reduce-scatters in
# forward and all-gathers the gradient in backward. So a block's backward moves three all-reduces' worth,
# the head gathers in forward, and the embedding (all-reduce, then split) gathers its gradient in backward.
# Megatron issues the backward gather and reduce-scatter asynchronously beside the input- and weight-gradient
# GEMMs, as it does the non-SP backward all-reduce; pptune credits neither overlap (communication is exposed).
TP_COLLECTIVES_SP = {"block": (2, 3), "embedding": (1, 0.5), "head": (0.5, 1), "other": (0, 0)}


def tp_layer_ms(role: str, message_bytes: float, tp: int, link: Link, *,
                sequence_parallel: bool = False) -> tuple[float, float]:
    """(forward, backward) exposed TP communication of one layer per micro-batch."""
    if tp <= 1:
        return 0.0, 0.0
    one = all_reduce_ms(message_bytes, tp, link)
    n_fwd, n_bwd = (TP_COLLECTIVES_SP if sequence_parallel else TP_COLLECTIVES).get(role, (0, 0))
    return n_fwd * one, n_bwd * one


def dp_grad_sync_ms(grad_bytes: float, param_bytes: float, *, dp: int, zero_stage: int, link: Link,
                    gather_after_all_reduce: bool = False) -> float:
    """Data-parallel gradient synchronisation of one stage's gradients.

    ZeRO 0: all-reduce the gradients. ZeRO >= 1: reduce-scatter the gradients, then all-gather the
    updated parameters (same total volume as an all-reduce when grads and weights share a dtype).
    ``gather_after_all_reduce``: DeepSpeed's BF16_Optimizer (``memory.bf16_optimizer``) all-reduces every
    gradient (pipe engine ``_bf16_reduce_grads``), steps its own 1/dp partition and all-gathers the updated
    16-bit weights (``update_lp_params``), at ZeRO 0 as at ZeRO 1: half as much traffic again.
    """
    if dp <= 1:
        return 0.0
    if gather_after_all_reduce:
        return all_reduce_ms(grad_bytes, dp, link) + all_gather_ms(param_bytes, dp, link)
    if zero_stage == 0:
        return all_reduce_ms(grad_bytes, dp, link)
    return reduce_scatter_ms(grad_bytes, dp, link) + all_gather_ms(param_bytes, dp, link)


def zero_microbatch_ms(grad_bytes: float, param_bytes: float, *, dp: int, zero_stage: int,
                       link: Link) -> tuple[float, float]:
    """(gradient reduce-scatter, parameter all-gathers) that ZeRO-2/3 repeat in every micro-batch.

    ZeRO-2 partitions gradients, so it reduce-scatters them in each micro-batch's backward, not only at the
    accumulation boundary (deepspeed/runtime/zero/stage_1_and_2.py, ``reduce_ready_partitions_and_remove_grads``:
    ``if self.partition_gradients or self.is_gradient_accumulation_boundary()``). ZeRO-3 also gathers the
    partitioned parameters for each forward and again for each backward. ZeRO 0/1 reduce once per step only.
    """
    if dp <= 1 or zero_stage < 2:
        return 0.0, 0.0
    gathers = 2 * all_gather_ms(param_bytes, dp, link) if zero_stage >= 3 else 0.0
    return reduce_scatter_ms(grad_bytes, dp, link), gathers


def zero_exposed_ms(reduce_ms: float, gather_ms: float, *, zero_stage: int, num_microbatches: int,
                    busy_ms: float) -> float:
    """Exposed ZeRO-2/3 traffic of a step beyond the boundary sync ``dp_grad_sync_ms`` already counts.

    The last micro-batch's reduce-scatter is the boundary one. DeepSpeed turns ``overlap_comm`` on by default
    for ZeRO-3 only (zero/config.py ``overlap_comm_valid``): its prefetched gathers and reductions hide behind
    the stage's compute (``busy_ms``) and only the excess shows; ZeRO-2's reductions run inside backward, exposed.
    """
    extra = max(num_microbatches - 1, 0) * reduce_ms + num_microbatches * gather_ms
    return max(0.0, extra - busy_ms) if zero_stage >= 3 else extra
