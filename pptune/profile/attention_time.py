"""A layer's attention-core forward time: what Megatron's selective recompute re-runs in the backward.

Measured inside an ordinary forward of the layer: a dispatch mode times every kernel that
``torch.nn.functional.scaled_dot_product_attention`` dispatches to (flash, memory-efficient, cuDNN or math,
whose aten names all start with ``_scaled_dot_product``) with the profiler's own timer, and lets every other op
run untimed. A layer that computes attention from separate matmuls and a softmax (an "eager" attention) has no
such kernel and gets 0: the cost model then falls back to the attention's FLOP share (``pptune.cost.layers``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

from pptune.profile.timing import Timer

ATTENTION_OP_PREFIX = "_scaled_dot_product"


class _AttentionClock(TorchDispatchMode):
    """Sums the time of the attention kernels dispatched while it is active."""

    def __init__(self, timer: Timer) -> None:
        super().__init__()
        self.timer = timer
        self.ms = 0.0
        self.calls = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if not func.overloadpacket.__name__.startswith(ATTENTION_OP_PREFIX):
            return func(*args, **kwargs)
        out, ms = self.timer.time(lambda: func(*args, **kwargs))
        self.ms += ms
        self.calls += 1
        return out


def attention_fwd_ms(forward: Callable[[], Any], timer: Timer, *, repeat: int) -> float:
    """Median over ``repeat`` calls of ``forward()`` of the time spent in attention kernels (0 when there are none).

    One call first tells whether the layer runs any attention kernel; only then are the ``repeat`` timed calls made.
    """
    clock = _AttentionClock(timer)
    with clock:
        forward()
    if not clock.calls:
        return 0.0
    samples = []
    for _ in range(repeat):
        clock = _AttentionClock(timer)
        with clock:
            forward()
        samples.append(clock.ms)
    return statistics.median(samples)
