"""Peak memory of one GPU of each pipeline stage: model states, activations, buffers and a reserve.

Model states per parameter (Rajbhandari et al. SC'20, "ZeRO", Sec. 3; REFERENCE.md §1 and §4):
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

from pptune.cost.layers import LayerTable
from pptune.parallel import ParallelConfig

GIB = 2**30
# CUDA context and library workspaces (~0.5 GiB) plus NCCL/p2p communication buffers (~0.5 GiB).
RESERVE_FIXED_BYTES = 1 * GIB
# Caching-allocator fragmentation, as a share of everything else.
RESERVE_FRACTION = 0.05


def bytes_per_param(config: ParallelConfig) -> tuple[float, float, float]:
    """(weight, gradient, optimizer) bytes per parameter, before ZeRO partitioning."""
    if config.dtype == "fp32":
        return 4.0, 4.0, 8.0
    if config.target == "megatron":
        grad = 4.0
    else:
        grad = 6.0 if config.dtype == "bf16" else 2.0
    return 2.0, grad, 12.0


def bf16_optimizer(config: ParallelConfig) -> bool:
    """Whether DeepSpeed runs its BF16_Optimizer: bf16 in the pipeline engine at ZeRO 0, or ZeRO 1 with the fp32
    gradient accumulation pptune emits (engine ``_do_optimizer_sanity_check``); ZeRO 2/3 use the ZeRO optimizer."""
    return config.target == "deepspeed" and config.dtype == "bf16" and config.zero_stage <= 1


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


def chunk_activation_bytes(table: LayerTable, first: int, last: int, config: ParallelConfig) -> tuple[int, int]:
    """(bytes kept per in-flight micro-batch, transient recompute working set) of layers [first, last)."""
    interval = config.recompute_interval
    if interval == 0:
        kept = table.total("saved_bytes", first, last)
        if config.recompute == "selective":
            kept -= table.total("attn_saved_bytes", first, last)
        work = 0
    else:
        kept = work = 0
        for g in range(first, last, interval):
            kept += table.output_bytes[g - 1] if g > 0 else table.input_bytes
            work = max(work, table.total("saved_bytes", g, min(g + interval, last)))
    if config.target == "deepspeed" and last < table.num_layers:
        # The pipe engine holds each in-flight micro-batch's stage output until its backward: its 1/tp part
        # when tp > 1 (pipe_partitioned replaces the full tensor's data by the partition, chunks.partitioned_sends).
        kept += table.output_bytes[last - 1] // config.tp
    return kept, work


def stage_memory(table: LayerTable, boundaries: tuple[int, ...], config: ParallelConfig,
                 stage: int) -> dict[str, int]:
    """Named parts (bytes) of one GPU's peak memory on ``stage``; ``sum(values())`` is the total."""
    pp, dp = config.pp, config.dp
    chunks = range(stage, len(boundaries) - 1, pp)
    params = 0
    kept_max = work_max = 0
    for c in chunks:
        first, last = boundaries[c], boundaries[c + 1]
        params += table.total("param_count", first, last) + table.tied_copy_on(first, last)
        kept, work = chunk_activation_bytes(table, first, last, config)
        kept_max, work_max = max(kept_max, kept), max(work_max, work)
    w_b, g_b, o_b = bytes_per_param(config)
    weights = params * w_b / (dp if config.zero_stage >= 3 else 1)
    grads = params * g_b / (dp if config.zero_stage >= 2 else 1)
    optim = params * o_b / (dp if optimizer_partitioned(config) else 1)
    units = inflight_units(config, stage)
    parts = {
        "weights": round(weights),
        "gradients": round(grads),
        "optimizer": round(optim),
        "activations": units * kept_max,
        "recompute_working": work_max,
        "logits": 0,
    }
    head = table.head_index
    if head is not None and any(boundaries[c] <= head < boundaries[c + 1] for c in chunks):
        # The loss works on fp32 logits (Megatron's vocab-parallel cross-entropy does ``.float()``): the
        # gradient it hands back is one fp32 copy of the head's output, and a measured head (the module
        # alone) does not include the softmax the loss saves, a second copy. Analytic heads include it.
        copies = 1 if table.profile_source == "analytic" else 2
        parts["logits"] = round(copies * table.output_bytes[head] * 4 / table.act_bytes)
    parts["reserve"] = RESERVE_FIXED_BYTES + round(RESERVE_FRACTION * sum(parts.values()))
    return parts
