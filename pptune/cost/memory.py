"""Peak memory of one GPU of each pipeline stage: model states, activations, buffers and a reserve.

Model states per parameter (Rajbhandari et al. SC'20, "ZeRO", Sec. 3; docs/REFERENCE.md §1 and §4):
- fp32 training: 4 weight + 4 gradient + 8 Adam (m, v).
- bf16/fp16 mixed precision: 2 weight + gradient + 12 fp32 optimizer (master copy, m, v). The gradient is
  2 bytes (DeepSpeed fp16: FP16_Optimizer makes fp32 copies only inside the step), 2 + 4 for DeepSpeed bf16
  (BF16_Optimizer keeps the bf16 ``.grad`` plus a flat fp32 accumulation buffer; we assume
  ``data_types.grad_accum_dtype = fp32``), and 4 for Megatron (fp32 ``main_grad`` buffer).
- ZeRO-1 divides the optimizer bytes by dp, ZeRO-2 also the gradients, ZeRO-3 also the weights.
  DeepSpeed's BF16_Optimizer partitions the fp32 master and Adam states over DP even at ZeRO 0
  (``deepspeed/runtime/bf16_optimizer.py::_setup_for_real_optimizer``), so we divide them too.

Activations: a stage keeps the saved tensors of every in-flight micro-batch: GPipe ``m``; 1F1B and
ZB-H1 ``min(pp - s, m)`` on stage ``s`` (DeepSpeed TrainSchedule; ZB-H1 keeps 1F1B's peak, Qi et al.);
interleaved ``min(m*v, 2*(pp - s - 1) + (v - 1)*pp + 1)`` chunk units (Megatron's warm-up plus one),
each charged the stage's largest chunk. Recompute keeps only each checkpointed group's input per
micro-batch, plus one group's full saved tensors while it is recomputed (``full`` = groups of one layer,
``every:K`` = DeepSpeed's ``activation_checkpoint_interval`` K); ``selective`` drops the attention scores.
"""

from __future__ import annotations

import numpy as np

from pptune.cost.layers import LayerTable
from pptune.parallel import ParallelConfig
from pptune.targets import rules_for

GIB = 2**30
# CUDA context and library workspaces (~0.5 GiB) plus NCCL/p2p communication buffers (~0.5 GiB).
RESERVE_FIXED_BYTES = 1 * GIB
# Caching-allocator fragmentation, as a share of everything else.
RESERVE_FRACTION = 0.05


def bytes_per_param(config: ParallelConfig) -> tuple[float, float, float]:
    """(weight, gradient, optimizer) bytes per parameter, before ZeRO partitioning."""
    grad = rules_for(config.target, config.pp).grad_bytes(config.dtype)
    if config.dtype == "fp32":
        return 4.0, grad, 8.0
    return 2.0, grad, 12.0


def bf16_optimizer(config: ParallelConfig) -> bool:
    """Whether DeepSpeed runs its BF16_Optimizer: bf16 in the pipeline engine at ZeRO 0, or ZeRO 1 with the fp32
    gradient accumulation pptune emits (engine ``_do_optimizer_sanity_check``); ZeRO 2/3 use the ZeRO optimizer."""
    return config.dtype == "bf16" and config.zero_stage <= rules_for(config.target, config.pp).bf16_optimizer_max_zero


def optimizer_partitioned(config: ParallelConfig) -> bool:
    """Whether the optimizer states are split over the data-parallel group."""
    return config.zero_stage >= 1 or bf16_optimizer(config)


def inflight_units(config: ParallelConfig, stage: int) -> int:
    """Forward units (chunk x micro-batch) whose activations stage ``stage`` holds at its peak."""
    pp, m, v = config.pp, config.num_microbatches, config.vpp
    if config.schedule == "gpipe":
        return m
    if config.schedule == "interleaved_1f1b":
        return min(m * v, 2 * (pp - stage - 1) + (v - 1) * pp + 1)
    return min(pp - stage, m)


def grouped_checkpoint_bytes(table: LayerTable, first: int, last: int, interval: int) -> tuple[int, int]:
    """(inputs kept per in-flight micro-batch, recompute working set) of layers [first, last) checkpointed in groups
    of ``interval`` layers (DeepSpeed's ``activation_checkpoint_interval``; one-layer groups are vectorised in
    ``pptune.cost.chunks``)."""
    kept = work = 0
    for g in range(first, last, interval):
        kept += table.output_bytes[g - 1] if g > 0 else table.input_bytes
        work = max(work, table.total("saved_bytes", g, min(g + interval, last)))
    return kept, work


def logits_bytes(table: LayerTable) -> int:
    """The head stage's loss working set: fp32 logits.

    The loss works on fp32 logits (Megatron's vocab-parallel cross-entropy does ``.float()``): the gradient it
    hands back is one fp32 copy of the head's output, and a measured head (the module alone) does not include
    the softmax the loss saves, a second copy. Analytic heads include it.
    """
    if table.head_index is None:
        return 0
    copies = 1 if table.profile_source == "analytic" else 2
    return round(copies * table.output_bytes[table.head_index] * 4 / table.act_bytes)


MEMORY_PARTS = ("weights", "gradients", "optimizer", "activations", "recompute_working", "logits", "reserve")


def memory_parts(states: np.ndarray, units: np.ndarray, kept: np.ndarray, work: np.ndarray,
                 logits: np.ndarray) -> dict[str, np.ndarray]:
    """Named parts (bytes, (K, pp) int arrays) of one GPU's peak memory per stage, ``MEMORY_PARTS`` in order.

    Args:
        states: (K, 3, pp) weight, gradient and optimizer bytes (``pptune.cost.stage_terms``).
        units: (K, pp) in-flight forward units at the peak (``inflight_units``).
        kept: (K, pp) the stage's largest per-micro-batch activations of a chunk; work: its recompute working set.
        logits: (K, pp) the loss working set on the head's stage, 0 elsewhere.
    """
    parts = {"weights": states[:, 0], "gradients": states[:, 1], "optimizer": states[:, 2],
             "activations": units * kept, "recompute_working": work, "logits": logits}
    held = parts["weights"] + parts["gradients"] + parts["optimizer"] + parts["activations"] + work + logits
    parts["reserve"] = RESERVE_FIXED_BYTES + np.rint(RESERVE_FRACTION * held).astype(np.int64)
    return parts
