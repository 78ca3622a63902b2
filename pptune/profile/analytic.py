"""The analytic profile: per-layer times and bytes of a TransformerSpec on a GPU, from FLOPs, bytes and peaks.

It has the schema of a measured profile (``source="analytic"``), so the cost model cannot tell them apart.

Time model, per layer, direction and micro-batch size (``pptune.profile.flops`` gives the work):

- A GEMM of ``F`` FLOPs computes at ``peak * eff(F)`` with the saturating efficiency
  ``eff(F) = E * F / (F + F_half)``: ``E`` = ``GPU.matmul_efficiency`` (the plateau large GEMMs reach) and
  ``F_half`` = ``GPU.matmul_half_flops`` (the size at which a kernel reaches half of it), i.e. the GEMM at
  plateau speed plus a fixed ``F_half / (peak * E)`` per kernel (tile quantisation, tail). Roofline: a GEMM
  whose operands take longer to move than to multiply (the unfused attention's ``[s, d] x [d, s]``) takes
  ``bytes / (hbm_gbps * memory_efficiency)`` instead.
- Backward: input- and weight-gradient GEMMs of the transposed shapes (2x forward FLOPs). Its split for
  zero-bubble schedules (``LayerTiming.bwd_weight_ms``): W is the weight-gradient GEMMs' share of the
  backward's device time (a linear layer's ``X^T dY`` has the FLOPs of its ``dY W^T``; the attention core,
  its batched GEMMs, norms and other memory-bound work have no weights and go to B), applied to the whole
  backward including its host floor; the embedding's backward (token ids have no gradient) is all W.
- Attention core: one fused flash-attention-style kernel by default (Dao 2023): FLOPs counted in full
  (``fwd_flops``), but a causal kernel skips the masked half of the work; its backward costs
  ``FLASH_BWD_FACTOR`` (2.5) x forward. With ``flash_attention=False`` two batched GEMMs plus memory-bound
  softmax and dropout traffic over the ``s x s`` scores.
- Memory-bound work (norms, residual adds, activation functions, RoPE, embedding gather, cross-entropy):
  ``bytes / (hbm_gbps * memory_efficiency)``.
- Host time: an eager framework spends ``GPU.launch_overhead_us`` of CPU time per kernel it launches
  (Python, dispatcher, autograd). The GPU runs ahead of the host only when its own work is longer, so a
  pass takes about ``max(host, gpu)``; we use the smooth maximum ``(host^4 + gpu^4)^(1/4)`` because both
  vary op by op and neither hides the other completely near the crossover (calibrated on the A100 Megatron
  data, ``pptune validate --published``). Small layers are host-bound: this is their floor.
- No communication time: tensor-parallel all-reduces and pipeline p2p are the cost model's (``pptune.cost``).

Everything is per GPU of a ``tp``-way tensor-parallel group: shapes, ``fwd_flops``, ``param_count`` and bytes are
one rank's share. Blocks are identical, so one block is computed per micro-batch size and its frozen timings
are shared by every block (``shares_measurement_with`` = the first block's index, as the profiler records).
"""

from __future__ import annotations

from collections.abc import Iterable

from pptune.errors import ConfigError
from pptune.hardware import GPU
from pptune.limits import check_micro_batch
from pptune.model.spec import TransformerSpec
from pptune.profile.flops import (
    ATTN_OPS_FLASH,
    ATTN_OPS_UNFUSED,
    DTYPE_BYTES,
    FLASH_BWD_FACTOR,
    Gemm,
    Work,
    block_work,
    check_tp,
    embedding_work,
    head_work,
)
from pptune.profile.schema import LayerProfile, LayerTiming, Profile, backward_split, check_layer_bounds
from pptune.profile.sizes import (
    block_params,
    block_saved_bytes,
    embedding_params,
    embedding_saved_bytes,
    head_params,
    head_saved_bytes,
    hidden_bytes,
    logits_bytes,
)

KIND_EMBEDDING, KIND_BLOCK, KIND_HEAD = "EmbeddingPipe", "TransformerBlockPipe", "HeadPipe"  # pptune.model.layers


def gemm_ms(flops: float, gpu: GPU, dtype: str) -> float:
    """Time of one GEMM of ``flops`` FLOPs: ``flops / (peak * eff)`` with ``eff = E * F / (F + F_half)``."""
    if flops <= 0:
        return 0.0
    return (flops + gpu.matmul_half_flops) / (gpu.peak_tflops(dtype) * 1e12 * gpu.matmul_efficiency) * 1e3


def memory_ms(nbytes: float, gpu: GPU) -> float:
    """Time of memory-bound work moving ``nbytes`` at the achieved HBM bandwidth."""
    return nbytes / (gpu.hbm_gbps * 1e9 * gpu.memory_efficiency) * 1e3


def gemm_shape_ms(gemm: Gemm, gpu: GPU, dtype: str) -> float:
    """Roofline time of one (batched) GEMM kernel: the slower of its compute and its operand traffic."""
    return max(gemm_ms(gemm.flops, gpu, dtype), memory_ms(gemm.bytes(DTYPE_BYTES[dtype]), gpu))


HOST_OVERLAP_NORM = 4.0  # the smooth maximum's exponent (see the module docstring)


def overlap_ms(host_ms: float, gpu_ms: float) -> float:
    """Time of a pass whose host launches take ``host_ms`` and whose kernels take ``gpu_ms``."""
    p = HOST_OVERLAP_NORM
    return (host_ms**p + gpu_ms**p) ** (1 / p)


def work_ms(work: Work, gpu: GPU, dtype: str) -> tuple[float, float]:
    """(forward, backward) milliseconds of one layer's work on ``gpu``."""
    fwd_gemm = sum(gemm_shape_ms(g, gpu, dtype) for g in work.gemms)
    attn_fwd, _ = _fused_attention_ms(work, gpu, dtype)
    fwd = fwd_gemm + attn_fwd + memory_ms(work.fwd_bytes, gpu)
    bwd = _bwd_device_ms(work, gpu, dtype)
    launch_ms = gpu.launch_overhead_us / 1e3
    return overlap_ms(work.fwd_ops * launch_ms, fwd), overlap_ms(work.bwd_ops * launch_ms, bwd)


def _fused_attention_ms(work: Work, gpu: GPU, dtype: str) -> tuple[float, float]:
    """(forward, backward) of a fused attention kernel; (0, 0) when unfused (its GEMMs are in ``work.gemms``)."""
    if not work.attn_fused:
        return 0.0, 0.0
    attn_fwd = gemm_ms(work.attn_flops * (1 - work.attn_causal_skip), gpu, dtype)
    return attn_fwd, FLASH_BWD_FACTOR * attn_fwd


def _bwd_device_ms(work: Work, gpu: GPU, dtype: str) -> float:
    """The backward's device time: input- and weight-gradient GEMMs, the fused attention's backward, memory traffic."""
    bwd_gemm = sum(gemm_shape_ms(d, gpu, dtype) for g in work.gemms for d in g.grads())
    return bwd_gemm + _fused_attention_ms(work, gpu, dtype)[1] + memory_ms(work.bwd_bytes, gpu)


def weight_grad_share(work: Work, gpu: GPU, dtype: str) -> float:
    """The weight-gradient GEMMs' share of the layer's backward device time (module docstring)."""
    device = _bwd_device_ms(work, gpu, dtype)
    weights = work.gemms[:len(work.gemms) - len(work.attn_gemms)]
    return sum(gemm_shape_ms(g.grads()[1], gpu, dtype) for g in weights) / device if device > 0 else 0.0


def attn_core_fwd_ms(work: Work, gpu: GPU, dtype: str) -> float:
    """Forward time of the attention core alone (what selective recompute re-runs in the backward).

    Megatron's selective recompute checkpoints ``CoreAttention``: ``Q K^T``, the scaled masked softmax, the
    attention dropout and ``A V`` (Korthikanti et al. MLSys'23, Sec 5). Unfused, those kernels move the ``s x s``
    scores and are memory-bound, so their time is far above their FLOP share; fused, it is the flash kernel.
    The same launch floor as a pass applies (its kernels re-launch).
    """
    if not work.attn_flops:
        return 0.0
    if work.attn_fused:
        gpu_ms = gemm_ms(work.attn_flops * (1 - work.attn_causal_skip), gpu, dtype)
        ops = ATTN_OPS_FLASH
    else:
        gpu_ms = sum(gemm_shape_ms(g, gpu, dtype) for g in work.attn_gemms) + memory_ms(work.attn_fwd_bytes, gpu)
        ops = ATTN_OPS_UNFUSED
    return overlap_ms(ops * gpu.launch_overhead_us / 1e3, gpu_ms)


def analytic_profile(
    spec: TransformerSpec,
    gpu: GPU,
    *,
    tp: int = 1,
    dtype: str = "bf16",
    micro_batch_sizes: Iterable[int] = (1, 2, 4, 8),
    sequence_parallel: bool = False,
    seq_len: int | None = None,
    flash_attention: bool | None = None,
) -> Profile:
    """A Profile of ``spec`` on one ``gpu`` of a ``tp``-way tensor-parallel group, computed, not measured.

    Args:
        spec: the model.
        gpu: the accelerator whose peaks and calibrated constants set the times.
        tp: tensor-parallel degree the layer shapes are sharded by (recorded as ``Profile.tp``).
        dtype: ``bf16``, ``fp16`` or ``fp32`` (fp32 uses the non-tensor-core peak).
        micro_batch_sizes: the sizes to tabulate (the cost model interpolates between them).
        sequence_parallel: split norms, residuals and their activations along the sequence (Megatron SP).
        seq_len: sequence length; the spec's by default.
        flash_attention: fused attention without ``s x s`` scores, or the unfused kernel; None: the spec's
            ``attention`` (flash by default). Given, it is written into the profile's spec.

    Raises:
        ConfigError: tp does not divide the heads or FFN width, an unknown dtype, bad micro-batch sizes.
    """
    check_tp(spec, tp)
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    if sequence_parallel and tp == 1:
        raise ConfigError("sequence parallelism needs tp > 1")
    sizes = tuple(sorted(set(micro_batch_sizes)))
    if not sizes or any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in sizes):
        raise ConfigError(f"micro-batch sizes must be positive integers, got {list(micro_batch_sizes)}")
    if seq_len is not None and seq_len != spec.seq_len:
        spec = spec.replace(seq_len=seq_len)
    if flash_attention is None:
        flash_attention = spec.attention == "flash"
    elif spec.attention != ("flash" if flash_attention else "unfused"):
        spec = spec.replace(attention="flash" if flash_attention else "unfused")
    s, sp = spec.seq_len, sequence_parallel
    for b in sizes:
        check_micro_batch(b, seq_len=s)
    emb_t, blk_t, head_t = [], [], []
    for b in sizes:
        hid = hidden_bytes(spec, b=b, s=s, tp=tp, dtype=dtype, sequence_parallel=sp)
        emb_t.append(_timing(embedding_work(spec, b=b, s=s, tp=tp, dtype=dtype, sequence_parallel=sp), gpu, dtype, b,
                             embedding_saved_bytes(spec, b=b, s=s, tp=tp, sequence_parallel=sp), hid,
                             input_grad=False))
        blk_t.append(_timing(block_work(spec, b=b, s=s, tp=tp, dtype=dtype, sequence_parallel=sp, flash=flash_attention),
                             gpu, dtype, b, block_saved_bytes(spec, b=b, s=s, tp=tp, dtype=dtype, sequence_parallel=sp,
                                                              flash=flash_attention), hid))
        head_t.append(_timing(head_work(spec, b=b, s=s, tp=tp, dtype=dtype, sequence_parallel=sp), gpu, dtype, b,
                              head_saved_bytes(spec, b=b, s=s, tp=tp, dtype=dtype, sequence_parallel=sp),
                              logits_bytes(spec, b=b, s=s, tp=tp, dtype=dtype)))
    e = DTYPE_BYTES[dtype]
    blk_params, blk_timings = block_params(spec, tp), tuple(blk_t)
    layers = [_layer(0, "embedding", KIND_EMBEDDING, "embedding", embedding_params(spec, tp), e, tuple(emb_t))]
    layers += [_layer(1 + i, f"block.{i}", KIND_BLOCK, "block", blk_params, e, blk_timings, None if i == 0 else 1)
               for i in range(spec.num_layers)]
    layers.append(_layer(spec.num_layers + 1, "head", KIND_HEAD, "head", head_params(spec, tp), e, tuple(head_t)))
    for layer in (layers[0], layers[1], layers[-1]):  # the blocks share one timing tuple: one check covers them
        check_layer_bounds(layer, origin=f"model {spec.name!r} on {gpu.name}")
    return Profile(
        model=spec.name, source="analytic", device=gpu.name, device_name=gpu.name, dtype=dtype,  # type: ignore[arg-type]
        seq_len=s, micro_batch_sizes=sizes, layers=tuple(layers), tp=tp, spec=spec.to_dict(),
        notes=(f"analytic: GEMM eff = {gpu.matmul_efficiency} * F / (F + {gpu.matmul_half_flops:.3g}) of "
               f"{gpu.peak_tflops(dtype)} TFLOP/s; memory-bound at {gpu.memory_efficiency} x {gpu.hbm_gbps} GB/s; "
               f"{'flash' if flash_attention else 'unfused'} attention; host {gpu.launch_overhead_us} us per kernel; "
               f"sequence_parallel={sp}; "
               "no communication (added by the cost model)"),
    )


def _timing(work: Work, gpu: GPU, dtype: str, b: int, saved: int, output: int, *, input_grad: bool = True) -> LayerTiming:
    fwd, bwd = work_ms(work, gpu, dtype)
    weight = bwd * weight_grad_share(work, gpu, dtype) if input_grad else bwd
    return LayerTiming(micro_batch_size=b, fwd_ms=fwd, bwd_ms=bwd, saved_bytes=saved, output_bytes=output,
                       fwd_flops=work.fwd_flops, attn_fwd_ms=min(fwd, attn_core_fwd_ms(work, gpu, dtype)),
                       **backward_split(bwd, bwd - weight))


def _layer(index: int, name: str, kind: str, role: str, params: int, e: int, timings: tuple[LayerTiming, ...],
           shares: int | None = None) -> LayerProfile:
    return LayerProfile(index=index, name=name, kind=kind, role=role, param_count=params,  # type: ignore[arg-type]
                        param_bytes=params * e, timings=timings, shares_measurement_with=shares)
