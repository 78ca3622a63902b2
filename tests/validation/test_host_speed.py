"""The host-speed probe: a positive time from each of two pinned processes, and from this one."""

from __future__ import annotations

from pptune.validation.host_speed import host_speed_ms, sample_ms


def test_probe_processes_report_a_time() -> None:
    got = host_speed_ms(copies=2, samples=1)
    assert got is not None and 1.0 < got < 60_000.0


def test_in_process_sample_is_a_median_of_positive_times() -> None:
    assert sample_ms(samples=1) > 0.0
