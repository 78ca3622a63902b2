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

import dataclasses
import math

import numpy as np

from pptune.cost.layers import LayerTable
from pptune.errors import ConfigError
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.targets import rules_for

GIB = 2**30
MIB = 2**20
# What the framework and allocator add on a CUDA device, beside the tensors (none of it on a host CPU run):
# - the CUDA context with PyTorch's kernels and cuBLAS/cuDNN handles, outside the caching allocator's counters
#   (PyTorch "CUDA semantics: memory management": memory_reserved() does not include it); a few hundred MiB.
CUDA_CONTEXT_BYTES = 512 * MIB
# - NCCL's communicator buffers, allocated by NCCL itself (NCCL_BUFFSIZE, 4 MiB by default, per channel and peer,
#   docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html); charged once per rank of a multi-GPU job.
NCCL_BUFFER_BYTES = 512 * MIB
# - the caching allocator's fragmentation: reserved minus allocated, as a share of the tensor bytes.
ALLOCATOR_SLACK_FRACTION = 0.05
DS_REDUCE_BUCKET_ELEMENTS = 500_000_000  # DeepSpeedZeroConfig.reduce_bucket_size default (pptune emits no other)
ZERO_OPTIMIZER_BYTES_PER_PARAM = 16.0  # fp32 master 4 + Adam m, v 8 + fp32 gradient partition 4 (bytes_per_param)
HOST_CPU_NAMES = ("local-cpu",)  # devices that are host CPUs (pptune.hardware's local-cpu GPU and its probes)


def bytes_per_param(config: ParallelConfig) -> tuple[float, float, float]:
    """(weight, gradient, optimizer) bytes per parameter, before ZeRO partitioning.

    DeepSpeed's ZeRO-1/2 optimizer (``DeepSpeedZeroOptimizer``, when the BF16_Optimizer does not run) always keeps
    its own fp32 copy of its weight partition (``single_partition_of_fp32_groups``: ``.clone()`` of the flat
    partition even when the weights are fp32) and a flat fp32 gradient partition as that copy's ``.grad``
    (``initialize_optimizer_states``): 4 + 4 bytes beside Adam's 8, whatever the training dtype
    (deepspeed/runtime/zero/stage_1_and_2.py, DeepSpeed 0.19.8, lines 560-577 and 935-940).
    """
    grad = rules_for(config.target, config.pp).grad_bytes(config.dtype)
    zero_optimizer = config.target == "deepspeed" and config.zero_stage in (1, 2) and not bf16_optimizer(config)
    if zero_optimizer:
        return (4.0 if config.dtype == "fp32" else 2.0), grad, ZERO_OPTIMIZER_BYTES_PER_PARAM
    if config.dtype == "fp32":
        return 4.0, grad, 8.0
    return 2.0, grad, 12.0


def reduce_copy_cap_bytes(config: ParallelConfig) -> int:
    """The largest flat gradient copy DeepSpeed's ZeRO-0 reduction makes (0: none).

    Without ZeRO and without the BF16_Optimizer's flat buffers, ``allreduce_gradients`` runs
    ``buffered_allreduce_fallback``: every bucket of up to ``MEMORY_OPT_ALLREDUCE_SIZE`` (5e8) gradient elements is
    flattened into a new tensor, all-reduced and copied back (``allreduce_bucket`` / ``allreduce_and_copy``,
    deepspeed/runtime/engine.py, DeepSpeed 0.19.8, lines 3795-3826), also at dp = 1 under the pipeline engine.
    """
    if config.target != "deepspeed" or config.zero_stage != 0 or bf16_optimizer(config):
        return 0
    return DS_REDUCE_BUCKET_ELEMENTS * (2 if config.dtype == "fp16" else 4)


def bucket_bytes(config: ParallelConfig) -> int:
    """DeepSpeed ZeRO-1/2's gradient reduction buckets: ``reduce_bucket_size`` elements each (default 5e8,
    deepspeed/runtime/zero/config.py), allocated whole with ``torch.empty`` in ``setup_buckets`` (one, two with
    ``overlap_comm``, off by default below ZeRO-3), plus one more that ``reduce_gradients(pipeline_parallel=True)``
    appends under the pipeline engine (stage_1_and_2.py, DeepSpeed 0.19.8, lines 958-968 and 3255-3280). Their
    dtype is the gradient accumulation dtype (fp32 for pptune's bf16 configs, else the training dtype)."""
    if config.target != "deepspeed" or config.zero_stage not in (1, 2) or bf16_optimizer(config):
        return 0
    pipeline_engine = not (config.pp == 1 and config.zero_stage >= 2)  # pptune.runtime.build's engine choice
    dtype_bytes = 2 if config.dtype == "fp16" else 4
    return DS_REDUCE_BUCKET_ELEMENTS * dtype_bytes * (1 + int(pipeline_engine))


def backward_bucket_bytes(config: ParallelConfig) -> int:
    """The part of ``bucket_bytes`` live during the backward: ``setup_buckets``' buffer (the pipeline engine's
    second one is appended by ``reduce_gradients`` after the last backward). With ``contiguous_gradients`` (on by
    default) the gradients are copied into it and ``.grad`` becomes a view of it, so at the reduction the stage's
    gradients live inside the buckets (measured: pp 2 ZeRO-1 stage 0 peaks at weights + optimizer + both buckets)."""
    total = bucket_bytes(config)
    pipeline_engine = not (config.pp == 1 and config.zero_stage >= 2)
    return total // 2 if pipeline_engine else total


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


def logits_bytes(table: LayerTable, target: str = "megatron", num_microbatches: int = 1) -> int:
    """The head stage's loss working set: fp32 logits.

    The loss works on fp32 logits (Megatron's vocab-parallel cross-entropy does ``.float()``): the gradient it
    hands back is one fp32 copy of the head's output, and a measured head (the module alone) does not include
    the softmax the loss saves, a second copy. Analytic heads include it. DeepSpeed's pipeline engine also keeps
    the logits themselves until the backward (``_exec_forward_pass`` stores the stage output in
    ``pipe_buffers['outputs']`` before calling the loss, deepspeed/runtime/pipe/engine.py), and torch's
    cross-entropy backward holds the log-softmax gradient while it computes the logits' one: two copies more
    (measured at the peak, inside ``LogSoftmaxBackward``, on the local runs: results/validation/memory/local.md).
    With two micro-batches or more, the previous micro-batch's logits are still there too: the last stage has
    ``max(2, ...)`` pipe buffers (``TrainSchedule.num_pipe_buffers``, deepspeed/runtime/pipe/schedule.py) and its
    ``_exec_backward_pass`` returns before it clears its output buffer (engine.py, DeepSpeed 0.19.8, line 798).
    """
    if table.head_index is None:
        return 0
    copies = 1 if table.profile_source == "analytic" else 2
    if target == "deepspeed":
        copies += 2 + (1 if num_microbatches >= 2 else 0)
    return round(copies * table.output_bytes[table.head_index] * 4 / table.act_bytes)


TENSOR_PARTS = ("weights", "gradients", "optimizer", "activations", "recompute_working", "logits", "comm_buckets",
                "optimizer_step")
FRAMEWORK_PARTS = ("cuda_context", "nccl_buffers", "allocator_slack")
MEMORY_PARTS = TENSOR_PARTS + FRAMEWORK_PARTS


def is_host_cpu(device_name: str) -> bool:
    """Whether a cluster's device is the host CPU (no CUDA context, no NCCL, no caching allocator)."""
    return device_name in HOST_CPU_NAMES


def framework_bytes(device_name: str, world_size: np.ndarray | int, tensor_bytes: np.ndarray) -> dict[str, np.ndarray]:
    """``FRAMEWORK_PARTS`` of each stage ((K, pp) like ``tensor_bytes``; ``world_size`` (K,) or one count): what the
    framework and allocator add beside the tensors."""
    zero = np.zeros_like(tensor_bytes)
    if is_host_cpu(device_name):
        return {name: zero for name in FRAMEWORK_PARTS}
    world = np.asarray(world_size).reshape(-1, 1)
    return {"cuda_context": zero + CUDA_CONTEXT_BYTES, "nccl_buffers": zero + np.where(world > 1, NCCL_BUFFER_BYTES, 0),
            "allocator_slack": np.rint(ALLOCATOR_SLACK_FRACTION * tensor_bytes).astype(np.int64)}


def freed_grad_share(config: ParallelConfig) -> float:
    """The share of the gradient bytes that does not exist when a step's first backward starts.

    DeepSpeed's ``_take_model_step`` ends with ``param.grad = None`` (engine ``zero_grad``, or the optimizer's
    ``zero_grad(set_to_none=True)``; deepspeed/runtime/engine.py, DeepSpeed 0.19.8, lines 3495-3532): the
    ``.grad`` tensors come back during the next backward while the activations go. The BF16_Optimizer's fp32
    accumulation buffer stays (4 of its 6 bytes). Megatron's contiguous ``main_grad`` buffer stays too.
    """
    if config.target != "deepspeed":
        return 0.0
    grad = rules_for(config.target, config.pp).grad_bytes(config.dtype)
    return (2.0 / grad) if config.dtype == "bf16" and bf16_optimizer(config) else 1.0


def step_working_share(config: ParallelConfig) -> float:
    """The optimizer step's temporaries per optimizer-state byte, for DeepSpeed's flat fp32 partitions.

    torch's single-tensor Adam(W) (what DeepSpeed's ``torch_adam`` runs on a host CPU; the fused CUDA kernels
    allocate none) computes ``denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)``: two fp32
    temporaries the size of the parameter at once (torch/optim/adamw.py ``_single_tensor_adam``). The
    BF16_Optimizer and ZeRO-1/2 hand Adam one flat partition, so they reach 8 bytes per owned parameter; a
    ZeRO-0 optimizer steps parameter by parameter (0 here: one parameter's temporaries are small).
    """
    if config.target != "deepspeed":
        return 0.0
    if bf16_optimizer(config):
        return 8.0 / 12.0
    return 8.0 / ZERO_OPTIMIZER_BYTES_PER_PARAM if config.zero_stage in (1, 2) else 0.0


def later_units(config: ParallelConfig, units: int) -> int:
    """In-flight forward units when a later backward of the step starts (0: there is none). In 1F1B a stage that
    has more micro-batches than in-flight slots runs one more forward before each later backward."""
    if config.num_microbatches < 2:
        return 0
    if config.schedule == "gpipe" or config.num_microbatches > units:
        return units
    return units - 1


def memory_parts(states: np.ndarray, units: np.ndarray, kept: np.ndarray, work: np.ndarray, logits: np.ndarray,
                 *, configs: list[ParallelConfig], device_name: str) -> dict[str, np.ndarray]:
    """Named parts (bytes, (K, pp) int arrays) of one GPU's memory per stage at its peak, ``MEMORY_PARTS`` in order.

    The peak is the largest of three moments of the step (each part is what is live then):
    - the first backward starts: every in-flight unit's activations, the recompute working set and the loss's, and
      no freed gradient yet (``freed_grad_share``);
    - a later backward starts (two micro-batches or more): ``later_units`` units and every gradient;
    - the reduction after the last backward: every gradient and DeepSpeed ZeRO-0's flat gradient copy
      (``reduce_copy_cap_bytes``), no activations;
    - the optimizer step: every gradient and Adam's temporaries over a flat partition (``step_working_share``).
    Weights and optimizer states are live throughout, ZeRO-1/2's first reduction bucket too
    (``backward_bucket_bytes``); at the reduction the gradients sit inside the buckets (``bucket_bytes``).

    Args:
        states: (K, 3, pp) weight, gradient and optimizer bytes (``pptune.cost.stage_terms``).
        units: (K, pp) in-flight forward units at the peak (``inflight_units``).
        kept: (K, pp) the stage's largest per-micro-batch activations of a chunk; work: its recompute working set.
        logits: (K, pp) the loss working set on the head's stage, 0 elsewhere.
        configs: the K configurations; device_name: the cluster's device (``framework_bytes``).
    """
    grads = states[:, 1]
    share = np.array([freed_grad_share(c) for c in configs]).reshape(-1, 1)
    freed = np.rint(grads * share).astype(np.int64)
    later = np.array([[later_units(c, int(u)) for u in row] for c, row in zip(configs, units.tolist(), strict=True)],
                     dtype=np.int64)
    cap = np.array([reduce_copy_cap_bytes(c) for c in configs], dtype=np.int64).reshape(-1, 1)
    flat = np.minimum(grads, cap)
    buckets = np.array([bucket_bytes(c) for c in configs], dtype=np.int64).reshape(-1, 1)
    early = np.array([backward_bucket_bytes(c) for c in configs], dtype=np.int64).reshape(-1, 1)
    zero = buckets > 0  # the gradients move into the buckets for the reduction
    first = units * kept + work + logits + early
    again = np.where(later > 0, later * kept + work + logits + freed + early, -1)
    reduction = np.where(zero, buckets, freed + flat)
    temps = np.rint(states[:, 2] * np.array([step_working_share(c) for c in configs]).reshape(-1, 1)).astype(np.int64)
    step = freed + temps + early
    phase = np.argmax(np.stack([first, again, reduction, step]), axis=0)  # the first largest
    backward = phase < 2
    in_buckets = (phase == 2) & zero
    parts = {"weights": states[:, 0], "gradients": grads - np.where((phase == 0) | in_buckets, freed, 0),
             "optimizer": states[:, 2], "activations": np.where(phase == 0, units, np.where(backward, later, 0)) * kept,
             "recompute_working": np.where(backward, work, 0), "logits": np.where(backward, logits, 0),
             "comm_buckets": np.where(phase == 2, np.where(zero, buckets, flat), early),
             "optimizer_step": np.where(phase == 3, temps, 0)}
    held = parts["weights"]
    for name in TENSOR_PARTS[1:]:
        held = held + parts[name]
    parts.update(framework_bytes(device_name, np.array([c.world_size for c in configs]), held))
    return parts


def memory_margin(peak_bytes: int, memory_bytes: int, headroom_gib: float = 0.0) -> str:
    """``fits with X GiB to spare`` or ``needs Y GiB more``: the peak against the memory less ``headroom_gib``."""
    spare = (memory_bytes - peak_bytes) / GIB - headroom_gib
    kept = f" (keeping {headroom_gib:g} GiB free)" if headroom_gib else ""
    return f"fits with {spare:.2f} GiB to spare{kept}" if spare >= 0 else f"needs {-spare:.2f} GiB more{kept}"


def check_headroom(headroom_gib: float, memory_gib: float) -> float:
    """A ``--memory-headroom`` value: non-negative and below the device's memory.

    Raises:
        ConfigError: a negative, non-finite or too large headroom.
    """
    if not math.isfinite(headroom_gib) or headroom_gib < 0 or headroom_gib >= memory_gib:
        raise ConfigError(f"--memory-headroom must be >= 0 and below the device's {memory_gib:g} GiB, "
                          f"got {headroom_gib:g}")
    return headroom_gib


def with_memory_headroom(cluster: Cluster, headroom_gib: float) -> Cluster:
    """The cluster with ``headroom_gib`` less memory per device: what the planner's feasibility test keeps free
    (``pptune plan --memory-headroom``); the cluster itself when the headroom is 0."""
    if not check_headroom(headroom_gib, cluster.gpu.memory_gib):
        return cluster
    gpu = dataclasses.replace(cluster.gpu, memory_gib=cluster.gpu.memory_gib - headroom_gib)
    return dataclasses.replace(cluster, gpu=gpu)
