"""measure_records on a shared host: a run disturbed by other processes is repeated and the least disturbed kept;
a crash is recorded with its reason and not repeated; the disturbance meter reads this host."""

from __future__ import annotations

import pytest

import pptune.runtime.launch
import pptune.validation.run as run_module
from pptune.errors import RunError
from pptune.parallel import ParallelConfig
from pptune.testing.records import fake_measured, record
from pptune.validation.host_load import ForeignCpu
from pptune.validation.run import measure_records

CONFIG = ParallelConfig(pp=2, micro_batch_size=2, num_microbatches=4, dtype="fp32", partition="uniform")


class Script:
    """Scripted runs: each call pops (step ms or an exception, foreign share)."""

    def __init__(self, outcomes: list) -> None:
        self.outcomes = outcomes
        self.share = 0.0
        self.calls = 0

    def run_plan(self, path, **_: object):
        self.calls += 1
        result, self.share = self.outcomes.pop(0)
        if isinstance(result, Exception):
            raise result
        return fake_measured(CONFIG, result)

    def meter(self):
        script = self

        class Meter:
            def start(self):
                return self

            def share(self):
                return script.share

        return Meter()


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch):
    def install(outcomes: list) -> Script:
        script = Script(outcomes)
        monkeypatch.setattr(pptune.runtime.launch, "run_plan", script.run_plan)
        monkeypatch.setattr(run_module, "ForeignCpu", script.meter)
        return script
    return install


def test_disturbed_run_is_repeated_and_least_disturbed_kept(scripted, profile, cluster) -> None:
    script = scripted([(500.0, 0.4), (300.0, 0.3), (320.0, 0.2)])
    lines: list[str] = []
    [got] = measure_records([record(profile, cluster, CONFIG, measured_ms=None)], steps=1, warmup=0, timeout_s=9,
                            retries=2, max_foreign=0.1, log=lines.append)
    assert script.calls == 3 and got.attempts == 3
    assert got.measured_ms == 320.0 and got.foreign_share == 0.2 and got.failure is None
    assert sum("running it again" in line for line in lines) == 2


def test_quiet_run_is_not_repeated(scripted, profile, cluster) -> None:
    script = scripted([(300.0, 0.02)])
    [got] = measure_records([record(profile, cluster, CONFIG, measured_ms=None)], steps=1, warmup=0, timeout_s=9,
                            retries=2)
    assert script.calls == 1 and got.attempts == 1 and got.measured_ms == 300.0


def test_crash_is_recorded_not_repeated(scripted, profile, cluster) -> None:
    script = scripted([(RunError("training of x failed (exit code 1): boom; log: l"), 0.5)])
    [got] = measure_records([record(profile, cluster, CONFIG, measured_ms=None)], steps=1, warmup=0, timeout_s=9,
                            retries=2)
    assert script.calls == 1 and not got.ok and "boom" in got.failure and got.measured_ms is None


def test_meter_reads_a_share_of_this_host() -> None:
    share = ForeignCpu().start().share()
    assert share is None or 0.0 <= share <= 1.0


def test_a_run_on_a_drifted_host_is_repeated_and_the_nearest_to_the_profile_kept(scripted, profile, cluster,
                                                                                 monkeypatch) -> None:
    """No other process (share 0) but the host computed 30% slower than while profiling: that is a disturbance."""
    script = scripted([(400.0, 0.0), (350.0, 0.0), (330.0, 0.0)])
    probes = iter([130.0, 130.0, 110.0, 116.0, 126.0, 128.0])  # before and after each run
    monkeypatch.setattr(run_module, "host_speed_ms", lambda: next(probes))
    lines: list[str] = []
    [got] = measure_records([record(profile, cluster, CONFIG, measured_ms=None)], steps=1, warmup=0, timeout_s=9,
                            retries=2, max_foreign=0.1, host_reference_ms=100.0, max_host_drift=0.1,
                            log=lines.append)
    assert script.calls == 3 and got.attempts == 3
    assert got.measured_ms == 350.0 and got.host_ratio == pytest.approx(1.13)
    assert "host speed x1.30" in lines[0] and "host speed x1.13 of the profile's" in lines[-1]


def test_without_a_reference_the_host_is_not_probed(scripted, profile, cluster, monkeypatch) -> None:
    scripted([(300.0, 0.0)])
    monkeypatch.setattr(run_module, "host_speed_ms", lambda: pytest.fail("probed without a reference"))
    [got] = measure_records([record(profile, cluster, CONFIG, measured_ms=None)], steps=1, warmup=0, timeout_s=9)
    assert got.host_ratio is None and got.attempts == 1
