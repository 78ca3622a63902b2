"""The in-sequence factor: all layers run as one stage runs them, against the sum of their one-at-a-time times.

``measure_layer`` times each layer alone, in a loop of forward/backward pairs on the same input: the layer's
weights and activations stay in the caches between its forward and its backward and from one repetition to the
next. A pipeline stage runs its layers one after another, forward through all of them and later backward through
all of them, so each layer finds its weights evicted by the others. Measured on this project's 2-core CPUs with
``gpt:layers=6,hidden=192,heads=4,seq=64,vocab=4096``, one thread, two processes at once (AMD EPYC): the whole
chain's forward + backward took about 23% longer than the sum of the layers alone at micro-batch 1, a few percent
at micro-batch 8, where compute outweighs reloading the weights; the profile of every local validation report
records its factors (``in_sequence``).

``chain_scale`` times ``CHAIN_REPEAT`` forward + backward passes of the whole layer list (the last layer with the
loss, parameter gradients accumulating as across micro-batches) and returns the two ratios chain / sum; the
profiler multiplies every layer's timings at that micro-batch size by them (``pptune.profile.scale.scaled_timing``)
and records them in ``Profile.in_sequence``, so the isolated figures stay recoverable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pptune.profile.schema import InSequence
from pptune.profile.timing import Timer, summarize

CHAIN_WARMUP = 2  # the layers are warm already (measured just before); the first chain's allocations settle
CHAIN_REPEAT = 5


def chain_scale(layers: Sequence[nn.Module], tokens: torch.Tensor, *, loss_fn: Callable | None, timer: Timer,
                fwd_sum_ms: float, bwd_sum_ms: float, micro_batch_size: int) -> InSequence:
    """Time the whole chain on ``tokens`` and return its factors over the summed one-at-a-time medians."""

    def forward() -> torch.Tensor:
        x = tokens
        for layer in layers:
            x = layer(x)
        return loss_fn(x, tokens) if loss_fn is not None else x.float().sum()

    fwd_ms: list[float] = []
    bwd_ms: list[float] = []
    for i in range(CHAIN_WARMUP + CHAIN_REPEAT):
        loss, f = timer.time(forward)
        _, b = timer.time(lambda loss=loss: loss.backward())
        del loss
        if i >= CHAIN_WARMUP:
            fwd_ms.append(f)
            bwd_ms.append(b)
    for layer in layers:
        for p in layer.parameters():
            p.grad = None
    fwd, bwd = summarize(fwd_ms).median_ms, summarize(bwd_ms).median_ms
    return InSequence(micro_batch_size=micro_batch_size, fwd_scale=_ratio(fwd, fwd_sum_ms),
                      bwd_scale=_ratio(bwd, bwd_sum_ms))


def _ratio(chain_ms: float, sum_ms: float) -> float:
    return chain_ms / sum_ms if sum_ms > 0 and chain_ms > 0 else 1.0
