"""Step timers: instruction wrapping (pipeline and plain engines), DeepSpeed timer reads, per-step averaging."""

from __future__ import annotations

import time

import pytest

from pptune.runtime.timers import DeepSpeedTimers, InstructionTimers, StepTimers, enable_deepspeed_timers


class ForwardPass:
    kwargs = {"buffer_id": 0}


class SendActivation:
    kwargs = {"buffer_id": 0}


class FakePipeEngine:
    """Dispatches like PipelineEngine._exec_schedule: a class-level instruction map, functions bound per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def _fwd(self, buffer_id: int) -> None:
        time.sleep(0.002)
        self.calls.append(("fwd", buffer_id))

    def _send(self, buffer_id: int) -> None:
        self.calls.append(("send", buffer_id))

    _INSTRUCTION_MAP = {ForwardPass: _fwd, SendActivation: _send}

    def run(self, cmds: list[object]) -> None:
        from types import MethodType

        for cmd in cmds:
            MethodType(self._INSTRUCTION_MAP[type(cmd)], self)(**cmd.kwargs)


def test_instruction_timers_wrap_the_instance_only() -> None:
    engine = FakePipeEngine()
    timers = InstructionTimers(engine, cuda=False)
    engine.run([ForwardPass(), SendActivation(), ForwardPass()])
    assert engine.calls == [("fwd", 0), ("send", 0), ("fwd", 0)]  # behaviour unchanged
    read = timers.read()
    assert read["ForwardPass"][1] == 2 and read["SendActivation"][1] == 1
    assert read["ForwardPass"][0] >= 4.0  # two 2 ms sleeps
    assert timers.read() == {}  # reading resets
    assert FakePipeEngine._INSTRUCTION_MAP[ForwardPass] is FakePipeEngine._fwd  # the class is untouched


def test_instruction_timers_record_calls_that_raise() -> None:
    class Boom:
        kwargs: dict = {}

    def explode(self) -> None:
        raise RuntimeError("boom")

    engine = FakePipeEngine()
    FakePipeEngine._INSTRUCTION_MAP[Boom] = explode
    try:
        timers = InstructionTimers(engine, cuda=False)
        with pytest.raises(RuntimeError):
            engine.run([Boom()])
        assert timers.read()["Boom"][1] == 1
    finally:
        del FakePipeEngine._INSTRUCTION_MAP[Boom]


def test_plain_engine_methods_are_wrapped() -> None:
    class Plain:
        def forward(self, x: int) -> int:
            return x + 1

        def backward(self, loss: int) -> None:
            pass

        def step(self) -> None:
            pass

    engine = Plain()
    timers = InstructionTimers(engine, cuda=False)
    assert engine.forward(1) == 2
    engine.backward(2)
    engine.step()
    engine.step()
    read = timers.read()
    assert {k: v[1] for k, v in read.items()} == {"ForwardPass": 1, "BackwardPass": 1, "OptimizerStep": 2}


class FakeSource:
    def __init__(self, readings: list[dict[str, tuple[float, int]]]) -> None:
        self.readings = readings

    def read(self) -> dict[str, tuple[float, int]]:
        return self.readings.pop(0)


def test_step_timers_average_per_step_and_skip_warmup() -> None:
    source = FakeSource([
        {"ForwardPass": (100.0, 4)},  # warm-up, discarded
        {"ForwardPass": (8.0, 4), "OptimizerStep": (3.0, 1)},
        {"ForwardPass": (12.0, 4)},  # no optimizer step this time: counts as 0
    ])
    steps = StepTimers([source])
    steps.discard()
    steps.record_step()
    steps.record_step()
    stats = steps.stats()
    assert stats["ForwardPass"].per_step_ms == pytest.approx(10.0)
    assert stats["ForwardPass"].calls_per_step == pytest.approx(4.0)
    assert stats["ForwardPass"].per_call_ms == pytest.approx(2.5)
    assert stats["OptimizerStep"].per_step_ms == pytest.approx(1.5)
    assert stats["OptimizerStep"].calls_per_step == pytest.approx(0.5)
    assert StepTimers([]).stats() == {}


def test_deepspeed_timer_reads_and_the_backward_timer_fix() -> None:
    from deepspeed.utils.timer import SynchronizedWallClockTimer

    wall = SynchronizedWallClockTimer()
    for _ in range(3):
        wall("fwd_microstep").start()
        wall("fwd_microstep").stop()
    wall("bwd_microstep").start()  # still running: not read
    read = DeepSpeedTimers(wall).read()
    assert read["fwd_microstep"][1] == 3 and "bwd_microstep" not in read
    assert DeepSpeedTimers(wall).read()["fwd_microstep"] == (0.0, 0)

    class EngineTimers:
        backward_timers = ["bwd_microstep", "bwd"]
        backward_inner_timers = ["bwd_inner_microstep", "bwd_inner"]

    class Engine:
        def __init__(self, last: bool, on: bool = True) -> None:
            self.engine_timers, self.timers, self.last, self.on = EngineTimers(), wall, last, on

        def wall_clock_breakdown(self) -> bool:
            return self.on

        def is_last_stage(self) -> bool:
            return self.last

    assert enable_deepspeed_timers(Engine(last=False, on=False)) is None
    middle = Engine(last=False)
    assert enable_deepspeed_timers(middle) is not None
    assert middle.engine_timers.backward_timers == [] and middle.engine_timers.backward_inner_timers == []
    last = Engine(last=True)
    enable_deepspeed_timers(last)
    assert last.engine_timers.backward_timers == ["bwd_microstep", "bwd"]  # the last stage keeps the hook's timers
