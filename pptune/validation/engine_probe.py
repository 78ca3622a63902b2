"""Measure the DeepSpeed engine's per-parameter step work on this CPU and express it as the cost model's rate.

The cost model prices the optimizer step as memory traffic: ``OPTIMIZER_BYTES_PER_PARAM`` bytes per parameter
over ``hbm_gbps * memory_efficiency`` (pptune/cost/estimate.py). That holds for fused or multi-tensor GPU
kernels. On one CPU core the step DeepSpeed runs for an fp32, ZeRO-0 pipeline (``torch_adam``: torch's
single-tensor AdamW) is compute-bound (sqrt, divide, one Python loop per tensor) and several times slower
than its bytes suggest, and the engine adds per-parameter work the byte count leaves out: ``ReduceGrads``
flattens the gradients, scales them by 1/dp and copies them back even at dp = 1 (``buffered_allreduce_fallback``)
and ``OptimizerStep`` clips the fp32 gradients by their global norm (``clip_fp32_gradients``) before Adam.

``engine_step_ms`` times exactly that sequence on the model's own parameters, one thread, as a rank runs it;
``memory_efficiency_for`` turns the time into the ``memory_efficiency`` at which the cost model's byte count
gives the same time, so ``estimate`` needs no change: a device characterised, like the links by ``probe_links``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any


def engine_step_ms(parameters: list[Any], *, warmup: int = 3, repeat: int = 15) -> float:
    """Median time (ms, this thread's CPU clock) of DeepSpeed's per-step parameter work (module docstring), 1 thread.

    The parameters get random gradients; the optimizer is ``torch.optim.AdamW`` with pptune's emitted settings
    (lr 1e-4, betas (0.9, 0.95), weight decay 0.01), as DeepSpeed builds it for ``"torch_adam": true``.
    """
    import torch
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    from pptune.emit.deepspeed import DEFAULT_OPTIMIZER

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        params = [p for p in parameters if p.requires_grad]
        for p in params:
            p.grad = torch.randn_like(p)
        kw = {k: v for k, v in DEFAULT_OPTIMIZER["params"].items() if k != "torch_adam"}
        optimizer = torch.optim.AdamW(params, **kw)

        def step() -> None:
            grads = [p.grad for p in params]
            flat = _flatten_dense_tensors(grads)  # ReduceGrads (deepspeed/runtime/engine.py allreduce_bucket)
            flat.mul_(1.0)
            for buf, synced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
                buf.copy_(synced)
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # clip_fp32_gradients
            optimizer.step()

        times = []
        for i in range(warmup + repeat):
            start = time.thread_time()  # CPU time of this thread: other processes of a shared host do not count
            step()
            if i >= warmup:
                times.append((time.thread_time() - start) * 1e3)
        for p in params:
            p.grad = None
        return statistics.median(times)
    finally:
        torch.set_num_threads(previous)


def memory_efficiency_for(step_ms: float, num_params: int, *, hbm_gbps: float, dtype: str = "fp32") -> float:
    """The ``memory_efficiency`` at which the cost model's optimizer time equals ``step_ms`` for ``num_params``."""
    from pptune.cost.stage_terms import OPTIMIZER_BYTES_PER_PARAM

    per_param = OPTIMIZER_BYTES_PER_PARAM["fp32" if dtype == "fp32" else "mixed"]
    return num_params * per_param / (step_ms * hbm_gbps * 1e6)


def model_parameters(model: str, seq_len: int) -> list[Any]:
    """The trainable parameters of ``model``'s pipeline layers (tied weights once)."""
    from torch import nn

    from pptune.model.resolve import load_model_layers

    layers = load_model_layers(model, seq_len)
    return list(nn.ModuleList(layers.layers).parameters())


def _probe_worker(args: tuple[str, int]) -> tuple[float, int]:
    model, seq_len = args
    params = model_parameters(model, seq_len)
    return engine_step_ms(params), sum(p.numel() for p in params)


def contended_engine_step_ms(model: str, seq_len: int, *, copies: int = 2) -> tuple[float, int]:
    """``engine_step_ms`` on ``model``'s parameters in ``copies`` processes at once (the ranks step together);
    returns the mean time (ms) and the parameter count."""
    if copies <= 1:
        return _probe_worker((model, seq_len))
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(copies) as pool:
        results = pool.map(_probe_worker, [(model, seq_len)] * copies)
    return statistics.fmean(r[0] for r in results), results[0][1]
