"""The tensor-parallel group of a rank and the differentiable collectives Megatron-style layers are made of.

``TensorParallel`` holds this rank's tp size and rank (known from DeepSpeed's topology before any layer is
built) and, once bound, the process group: the slice group of DeepSpeed's ``PipelineParallelGrid``
(``get_slice_parallel_group``, deepspeed/runtime/pipe/topology.py), which ``PipelineModule`` creates before it
builds its layers, so the layers only reach the group when they first run.

The collectives are Megatron-LM's mappings (megatron/core/tensor_parallel/mappings.py, NVIDIA/Megatron-LM
@a11077467a): each forward collective has its adjoint as backward. Hidden states are ``[b, s, h]`` here, so
sequence parallelism splits dim 1 (Megatron's ``[s, b, h]`` splits dim 0). gloo has no reduce-scatter: on gloo
it is an all-reduce and a local chunk (the same result, more bytes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

SEQ_DIM = 1  # hidden states are [batch, sequence, hidden]


class TensorParallel:
    """This rank's tensor-parallel group: ``size``, ``rank``, ``sequence_parallel``; ``bind`` sets the process group.

    Shared by every tp layer a rank builds (passed as a LayerSpec argument). Not a dataclass: the group is
    bound after DeepSpeed's grid exists, and process groups are neither comparable nor copyable.
    """

    __slots__ = ("_group", "compute_only", "rank", "sequence_parallel", "size")

    def __init__(self, *, size: int, rank: int, sequence_parallel: bool = False, group: Any = None,
                 compute_only: bool = False) -> None:
        if size < 1 or not 0 <= rank < size:
            raise ValueError(f"tensor-parallel rank {rank} of size {size}")
        self.size, self.rank, self.sequence_parallel, self._group = size, rank, sequence_parallel, group
        # compute_only: one rank's shard of every layer with its collectives left out (each returns what it would
        # hand on, in the right shape, without talking to anyone): what the profiler times at tp > 1, since the
        # cost model prices the communication itself (pptune.profile.tp_shard).
        self.compute_only = compute_only

    def bind(self, group: Any) -> None:
        """Set the process group (DeepSpeed's slice group) the collectives run in."""
        self._group = group

    @property
    def group(self) -> Any:
        if self._group is None:
            raise RuntimeError("TensorParallel used before bind(): build tp layers through pptune.runtime.build")
        return self._group

    def __repr__(self) -> str:
        return f"TensorParallel(size={self.size}, rank={self.rank}, sequence_parallel={self.sequence_parallel})"


def all_reduce_(x: torch.Tensor, tp: TensorParallel, op: Any = None) -> None:
    """In-place all-reduce of ``x`` over the tp group (sum unless ``op``); nothing when ``tp.compute_only``."""
    if not tp.compute_only:
        dist.all_reduce(x, op=dist.ReduceOp.SUM if op is None else op, group=tp.group)


def _all_reduce(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    x = x.contiguous()
    all_reduce_(x, tp)
    return x


def _all_gather_seq(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    if tp.compute_only:
        return torch.cat([x.contiguous()] * tp.size, dim=SEQ_DIM)
    parts = [torch.empty_like(x) for _ in range(tp.size)]
    dist.all_gather(parts, x.contiguous(), group=tp.group)
    return torch.cat(parts, dim=SEQ_DIM)


def _reduce_scatter_seq(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    if x.shape[SEQ_DIM] % tp.size:
        raise RuntimeError(f"sequence length {x.shape[SEQ_DIM]} is not divisible by tp {tp.size}")
    if tp.compute_only:
        return x.chunk(tp.size, dim=SEQ_DIM)[tp.rank].contiguous()
    if dist.get_backend(tp.group) == "gloo":  # gloo implements no reduce_scatter
        return _all_reduce(x.clone(), tp).chunk(tp.size, dim=SEQ_DIM)[tp.rank].contiguous()
    chunks = [c.contiguous() for c in x.chunk(tp.size, dim=SEQ_DIM)]
    out = torch.empty_like(chunks[tp.rank])
    dist.reduce_scatter(out, chunks, group=tp.group)
    return out


def _identity(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    return x


def _all_reduce_copy(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    return _all_reduce(x.clone(), tp)


class _Collective(torch.autograd.Function):
    """``forward(x)`` in forward, its adjoint ``backward(grad)`` in backward (each ``f(tensor, tp)``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, tp: TensorParallel, forward: Any, backward: Any) -> torch.Tensor:
        ctx.tp, ctx.adjoint = tp, backward
        return forward(x, tp)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        return ctx.adjoint(grad, ctx.tp), None, None, None


# Megatron's names: copy_to_tensor_model_parallel_region, reduce_from_tensor_model_parallel_region,
# gather_from_sequence_parallel_region, reduce_scatter_to_sequence_parallel_region.
COPY_TO_TP = (_identity, _all_reduce_copy)
REDUCE_FROM_TP = (_all_reduce_copy, _identity)
GATHER_SEQ = (_all_gather_seq, _reduce_scatter_seq)
REDUCE_SCATTER_SEQ = (_reduce_scatter_seq, _all_gather_seq)


class _SumGradsOverTp(torch.autograd.Function):
    """Identity on replicated parameters; backward all-reduces their gradients over tp in one flat message.

    Under sequence parallelism a replicated parameter (a norm, a bias added after a reduce-scatter, the learned
    positions) sees only this rank's part of the sequence, so its gradient is a partial sum. Megatron all-reduces
    these once per step (``_allreduce_non_tensor_model_parallel_grads``); here it happens once per layer and
    micro-batch, inside autograd, which needs no hook in DeepSpeed's engine.
    """

    @staticmethod
    def forward(ctx: Any, tp: TensorParallel, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.tp = tp
        return tuple(p.view_as(p) for p in params)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        flat = _all_reduce(torch.cat([g.reshape(-1) for g in grads]), ctx.tp)
        out, offset = [], 0
        for g in grads:
            out.append(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return (None, *out)


def enter_tp(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """The full input of a column-parallel layer: identity (all-reduce in backward), or the sequence gathered."""
    return _Collective.apply(x, tp, *(GATHER_SEQ if tp.sequence_parallel else COPY_TO_TP))


def exit_tp(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """A row-parallel layer's partial sums reduced: all-reduce, or reduce-scatter over the sequence."""
    return _Collective.apply(x, tp, *(REDUCE_SCATTER_SEQ if tp.sequence_parallel else REDUCE_FROM_TP))


def replicated(tp: TensorParallel, *params: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """``params`` as used on a sequence shard: with sequence parallelism their gradients are summed over tp."""
    present = [p for p in params if p is not None]
    if not tp.sequence_parallel or not present:
        return params
    summed = iter(_SumGradsOverTp.apply(tp, *present))
    return tuple(None if p is None else next(summed) for p in params)
