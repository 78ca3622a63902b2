"""Per-step timing of what each rank's engine does: pipeline instructions, and DeepSpeed's own timers when on.

**Instruction timers (always).** ``PipelineEngine._exec_schedule`` runs each ``TrainSchedule`` instruction through
the class dict ``_INSTRUCTION_MAP`` (deepspeed/runtime/pipe/engine.py). An instance-level copy whose functions are
wrapped with a clock times every ``LoadMicroBatch``, ``ForwardPass``, ``BackwardPass``, ``SendActivation``,
``RecvActivation``, ``SendGrad``, ``RecvGrad``, ``ReduceTiedGrads``, ``ReduceGrads`` and ``OptimizerStep`` — the
same instruction names the cost model simulates — without DeepSpeed's timers. The plain engine (pp == 1, ZeRO 2/3)
has its ``forward``/``backward``/``step`` wrapped the same way (``step`` runs once per micro-batch and updates the
weights only at the accumulation boundary; ZeRO's gradient reduction runs inside ``backward``). Host clock on CPU; CUDA events on GPUs (resolved
once per step, after a synchronize, so timing adds no synchronisation inside the step).

**DeepSpeed timers (``"wall_clock_breakdown": true``).** ``fwd_microstep``, ``bwd_microstep``, ``pipe_send_output``,
``pipe_recv_input``, ``step_microstep``, ... (deepspeed/utils/timer.py, runtime/pipe/engine.py). DeepSpeed 0.19.8
starts ``bwd*`` twice on every stage but the last — once in ``_exec_backward_pass``, once in the backward hook's
``_backward_prologue`` — and asserts ("bwd_microstep timer has already been started"). ``enable_deepspeed_timers``
empties the hook's backward timer lists on those stages so the pipeline engine's own start/stop stand. The engine
also reads and resets its timers every ``steps_per_print`` steps; the runtime sets that beyond the run's length.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from pptune.runtime.measured import TimerStat

# Instruction names (deepspeed/runtime/pipe/schedule.py classes) grouped for summaries.
FORWARD = "ForwardPass"
BACKWARD = "BackwardPass"
SEND = ("SendActivation", "SendGrad")
RECV = ("RecvActivation", "RecvGrad")
OPTIMIZER = "OptimizerStep"
REDUCE = ("ReduceTiedGrads", "ReduceGrads")
SUMMARY_TIMERS = ("LoadMicroBatch", FORWARD, BACKWARD, *SEND, *RECV, *REDUCE, OPTIMIZER)


class InstructionTimers:
    """Wraps an engine's instruction executors (or plain forward/backward/step) and clocks each call."""

    def __init__(self, engine: Any, *, cuda: bool) -> None:
        self._cuda = cuda
        self._open: list[tuple[str, Any, Any]] = []  # (name, start, end): floats on CPU, events on CUDA
        if hasattr(type(engine), "_INSTRUCTION_MAP"):
            table = type(engine)._INSTRUCTION_MAP
            engine._INSTRUCTION_MAP = {cls: self._wrap(cls.__name__, fn) for cls, fn in table.items()}
        else:  # plain DeepSpeedEngine: bound methods, wrapped on the instance
            for attr, name in (("forward", FORWARD), ("backward", BACKWARD), ("step", OPTIMIZER)):
                object.__setattr__(engine, attr, self._wrap(name, getattr(engine, attr)))

    def _clock(self) -> Any:
        if not self._cuda:
            return time.perf_counter()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = self._clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self._open.append((name, start, self._clock()))

        return timed

    def read(self) -> dict[str, tuple[float, int]]:
        """Total ms and call count per name since the last read (call after the step's synchronize)."""
        out: dict[str, tuple[float, int]] = {}
        for name, start, end in self._open:
            ms = start.elapsed_time(end) if self._cuda else (end - start) * 1000.0
            total, calls = out.get(name, (0.0, 0))
            out[name] = (total + ms, calls + 1)
        self._open.clear()
        return out


class DeepSpeedTimers:
    """Reads (and resets) every timer DeepSpeed's ``SynchronizedWallClockTimer`` holds."""

    def __init__(self, engine_timers: Any) -> None:
        self._timers = engine_timers

    def read(self) -> dict[str, tuple[float, int]]:
        out = {}
        for name, timer in self._timers.get_timers().items():
            if getattr(timer, "started_", False):
                continue  # still running (not expected between steps): leave it alone
            calls = len(getattr(timer, "event_timers", ()))
            out[name] = (float(timer.elapsed(reset=True)), calls)
        return out


def enable_deepspeed_timers(engine: Any) -> DeepSpeedTimers | None:
    """DeepSpeed's timers of this engine, with the double-start fix above; None when wall_clock_breakdown is off."""
    if not engine.wall_clock_breakdown():
        return None
    is_pipe = hasattr(engine, "is_last_stage")
    if is_pipe and not engine.is_last_stage():
        engine.engine_timers.backward_timers = []
        engine.engine_timers.backward_inner_timers = []
    return DeepSpeedTimers(engine.timers)


class StepTimers:
    """Collects, step by step, the total time and call count of every timer of its sources."""

    def __init__(self, sources: list[Any]) -> None:
        self._sources = sources
        self._ms: dict[str, list[float]] = defaultdict(list)
        self._calls: dict[str, list[int]] = defaultdict(list)
        self._steps = 0

    def _read(self) -> dict[str, tuple[float, int]]:
        out: dict[str, tuple[float, int]] = {}
        for source in self._sources:
            out.update(source.read())
        return out

    def discard(self) -> None:
        """Drop everything accumulated so far (the warm-up steps)."""
        self._read()

    def record_step(self) -> None:
        """Attribute everything since the last read to one step."""
        self._steps += 1
        for name, (ms, calls) in self._read().items():
            self._ms[name].append(ms)
            self._calls[name].append(calls)

    def stats(self) -> dict[str, TimerStat]:
        """Mean per-step total and calls of each timer over the recorded steps (steps it missed count as 0)."""
        if not self._steps:
            return {}
        out = {}
        for name, values in sorted(self._ms.items()):
            pad = [0] * (self._steps - len(values))
            out[name] = TimerStat(per_step_ms=statistics.fmean([*values, *pad]),
                                  calls_per_step=statistics.fmean([*self._calls[name], *pad]))
        return out
