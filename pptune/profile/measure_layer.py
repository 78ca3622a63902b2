"""Measure one pipeline layer at one input: forward and backward time, saved bytes, output bytes, FLOPs, peak memory.

The layer runs alone, as a pipeline stage runs it: its input is a detached tensor that requires
grad (so backward computes the input gradient a stage sends upstream), except token ids, which
have none. Backward is ``torch.autograd.backward(out, grad)`` with a fixed random ``grad`` of the
output's shape; the last layer with a loss runs ``loss(layer(x), labels)`` and backward from the
scalar loss, because the last stage computes the loss (DeepSpeed's ``PipelineModule.loss_fn``).
Parameter gradients accumulate across iterations, the steady state of gradient accumulation over
micro-batches; they are dropped when the layer is done.

The backward split (zero-bubble schedules run the input gradient B and the weight gradient W apart, Qi et al.
ICLR'24): after the timed pairs the layer runs again with its parameters frozen (``requires_grad_(False)``), so
autograd computes the input gradient only (each op's backward skips the gradients of inputs that need none:
a linear layer's ``X^T dY``, a norm's weight and bias terms); that backward's median is B and the rest of
``bwd_ms`` is W. A layer whose input has no gradient (the embedding's token ids) is all W, one without
parameters all B.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from pptune.profile.attention_time import attention_fwd_ms
from pptune.profile.saved_bytes import saved_bytes
from pptune.profile.schema import LayerTiming, backward_split
from pptune.profile.timing import Timer, summarize


def _sdpa_model_flops(op: torch._ops.OpOverloadPacket) -> Callable[..., int]:
    """The FLOP formula of an SDPA kernel counting a causal call's lower half only (model FLOPs).

    torch's formula counts the full s x s score matrix ("We aren't accounting for causal attention here");
    pptune's model FLOPs take the causal half, as the analytic profile and Megatron-LM's FLOP count do
    (pptune/profile/flops.py), so that measured and analytic MFU agree and neither passes 100%.
    """
    names = [a.name for a in op.default._schema.arguments]
    causal_at = names.index("is_causal") - 3  # position among the arguments after query, key and value

    def formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        causal = kwargs.get("is_causal", args[causal_at] if len(args) > causal_at else False)
        full = sdpa_flop_count(query_shape, key_shape, value_shape)
        return full // 2 if causal else full

    return formula


# torch's flop counter has no formula for the CPU flash-attention kernel that SDPA dispatches to on
# CPU (attention would count as 0 FLOPs there); the GPU kernels' formulas ignore causality. Every SDPA
# kernel here counts alike: the full score matrix, halved for a causal call.
_SDPA_KERNELS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
_EXTRA_FLOP_FORMULAS = {getattr(torch.ops.aten, name): _sdpa_model_flops(getattr(torch.ops.aten, name))
                        for name in _SDPA_KERNELS if hasattr(torch.ops.aten, name)}

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ATTENTION_REPEATS = 5  # forwards timing the attention kernels (after the timed forward/backward pairs)


@dataclass(frozen=True, kw_only=True, slots=True)
class Measured:
    """A layer's timing at one micro-batch size and the output it handed on (the next layer's input)."""

    timing: LayerTiming
    output: torch.Tensor | None  # None when the caller did not ask to keep it (the last layer's logits)


def measure_layer(
    layer: nn.Module,
    x: torch.Tensor,
    *,
    micro_batch_size: int,
    timer: Timer,
    warmup: int,
    repeat: int,
    loss_fn: Loss | None = None,
    labels: torch.Tensor | None = None,
    keep_output: bool = True,
) -> Measured:
    """Time ``warmup + repeat`` forward/backward pairs of ``layer`` on ``x`` and count what it saves and computes.

    Args:
        layer: the module, already on its device and in its dtype, in training mode.
        x: its input (token ids or a hidden tensor); not modified.
        micro_batch_size: recorded in the timing.
        timer: a CPU or CUDA timer.
        warmup: untimed iterations first (allocator, caches, lazy kernels: the first backward can be 3-8x slow);
            the first also counts FLOPs and saved bytes.
        repeat: timed iterations; the timing holds their median and max - min.
        loss_fn: when given (the last layer), forward and backward include ``loss_fn(layer(x), labels)``.
        labels: the loss's labels.
        keep_output: return the layer's output (the next layer's input); the last layer's logits are dropped early.
    """
    inp = x.detach().requires_grad_(x.is_floating_point())
    state = [*layer.parameters(), *layer.buffers()]

    def forward() -> tuple[torch.Tensor, torch.Tensor]:
        out = layer(inp)
        return out, (loss_fn(out, labels) if loss_fn is not None else out)

    # The first warm-up iteration also counts FLOPs and saved bytes and keeps the output (untimed, so the
    # counting modes' overhead costs nothing); it saves two extra forwards of the costliest layer, the head.
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as flops:
        saved, (out, result) = saved_bytes(forward, exclude=state)
    fwd_flops = float(flops.get_total_flops())
    output_bytes = out.numel() * out.element_size()
    output = out.detach() if keep_output else None
    grad = torch.randn_like(result) if result.dim() > 0 else None  # None: backward from a scalar loss
    differentiable = result.requires_grad
    if differentiable:
        torch.autograd.backward(result, grad)
    del out, result

    def step() -> torch.Tensor:
        return forward()[1]

    fwd_ms: list[float] = []
    bwd_ms: list[float] = []
    for i in range(1, warmup + repeat):
        inp.grad = None  # a stage sends each input gradient upstream; it never accumulates
        result, f = timer.time(step)
        b = 0.0
        if differentiable:
            _, b = timer.time(lambda result=result: torch.autograd.backward(result, grad))
        del result
        if i >= warmup:
            fwd_ms.append(f)
            bwd_ms.append(b)

    # The attention core's share of the forward (selective recompute), in extra forwards after the timed ones.
    attn_ms = attention_fwd_ms(step, timer, repeat=min(repeat, ATTENTION_REPEATS))
    fwd, bwd = summarize(fwd_ms), summarize(bwd_ms)
    input_ms = _input_grad_ms(layer, inp, step, grad, timer, repeat=repeat, bwd_ms=bwd.median_ms) if differentiable else 0.0
    peak = _peak_allocated_bytes(step, grad) if inp.device.type == "cuda" and differentiable else None
    for p in layer.parameters():
        p.grad = None
    timing = LayerTiming(
        micro_batch_size=micro_batch_size, fwd_ms=fwd.median_ms, bwd_ms=bwd.median_ms,
        fwd_spread_ms=fwd.spread_ms, bwd_spread_ms=bwd.spread_ms, saved_bytes=saved,
        output_bytes=output_bytes, fwd_flops=fwd_flops, peak_allocated_bytes=peak,
        attn_fwd_ms=min(attn_ms, fwd.median_ms), **backward_split(bwd.median_ms, input_ms),
    )
    return Measured(timing=timing, output=output)


def _input_grad_ms(layer: nn.Module, inp: torch.Tensor, step: Callable[[], torch.Tensor], grad: torch.Tensor | None,
                   timer: Timer, *, repeat: int, bwd_ms: float) -> float:
    """Median backward time with the parameters frozen: the input-gradient part B (module docstring)."""
    params = [p for p in layer.parameters() if p.requires_grad]
    if not inp.requires_grad:  # token ids: no input gradient, the whole backward is the weight gradient
        return 0.0
    if not params:  # nothing to freeze: the whole backward is the input gradient
        return bwd_ms
    for p in params:
        p.requires_grad_(False)
    samples: list[float] = []
    try:
        for i in range(1 + repeat):  # one untimed pass first (the frozen graph's first backward)
            inp.grad = None
            result = step()
            _, b = timer.time(lambda result=result: torch.autograd.backward(result, grad))
            del result
            if i:
                samples.append(b)
    finally:
        for p in params:
            p.requires_grad_(True)
    inp.grad = None
    return summarize(samples).median_ms


def _peak_allocated_bytes(step: Callable[[], torch.Tensor], grad: torch.Tensor | None) -> int:
    """CUDA bytes allocated at the peak of one forward + backward, above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = step()
    torch.autograd.backward(out, grad)
    del out
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)
