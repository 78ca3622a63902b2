"""The memory probe: peak of live tensor bytes on CPU from torch's profiler, kept per stage in measured.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from pptune.runtime.measured import RankRecord, TimerStat, load_measured, save_measured, stage_records
from pptune.runtime.memory_probe import MemoryProbe, estimated_memory_parts, peak_of_events

MB = 2**20


def test_peak_of_events_is_the_running_maximum() -> None:
    assert peak_of_events([(1, 100), (2, 50), (3, -100), (4, 30)]) == 150
    assert peak_of_events([(2, -40), (1, 10), (3, 20)]) == 20  # sorted by time; a free of older memory is not counted
    assert peak_of_events([]) == 0


def test_cpu_probe_sees_live_tensors_not_rss() -> None:
    probe = MemoryProbe("cpu", steps=2).start()
    a = torch.ones(4 * MB // 4)  # 4 MiB, live throughout
    b = torch.ones(8 * MB // 4)  # 8 MiB, freed before the second
    del b
    c = torch.ones(2 * MB // 4)
    probe.step_done()
    probe.step_done()  # the profiler stops here: what follows is not seen
    d = torch.ones(64 * MB // 4)
    reading = probe.reading()
    assert 12 * MB <= reading.peak_allocated_bytes < 12 * MB + MB // 4
    assert reading.peak_reserved_bytes is None and "profile_memory" in reading.source and reading.steps == 2
    del a, c, d


def _rank(rank: int, stage: int, allocated: int | None) -> RankRecord:
    return RankRecord(rank=rank, stage=stage, dp_rank=rank // 2, layer_start=0, layer_stop=1, num_forward_funcs=1,
                      param_count=10, peak_memory_bytes=MB, timers={"ForwardPass": TimerStat(per_step_ms=1.0,
                                                                                             calls_per_step=1.0)},
                      peak_allocated_bytes=allocated, memory_source=None if allocated is None else "test")


def test_stage_memory_is_the_largest_rank_and_round_trips(tmp_path: Path) -> None:
    from pptune.parallel import ParallelConfig
    from pptune.testing.records import fake_measured

    ranks = (_rank(0, 0, 3 * MB), _rank(1, 1, 2 * MB), _rank(2, 0, 5 * MB), _rank(3, 1, 1 * MB))
    estimated = [{"weights": 7, "activations": 8}, {"weights": 9, "activations": 1}]
    stages = stage_records(ranks, estimated)
    assert [s.peak_allocated_bytes for s in stages] == [5 * MB, 2 * MB]
    assert [s.estimated_memory_parts_bytes for s in stages] == estimated
    base = fake_measured(ParallelConfig(pp=2, dp=2, micro_batch_size=1, num_microbatches=2), 10.0)
    m = dataclasses.replace(base, ranks=ranks, stages=stages)
    path = save_measured(m, tmp_path / "measured.json")
    assert json.loads(path.read_text())["stages"][0]["peak_allocated_bytes"] == 5 * MB
    assert load_measured(path) == m
    old = stage_records((_rank(0, 0, None), _rank(1, 0, 4 * MB)))  # a rank without a reading: unknown, not 4 MiB
    assert old[0].peak_allocated_bytes is None and old[0].estimated_memory_parts_bytes is None


@pytest.mark.parametrize("text", ['{"estimate": {"stages": [{"memory_parts_bytes": {"weights": 5}}]}}', "not json",
                                  '{"estimate": {}}'])
def test_estimated_memory_parts_from_plan_json(tmp_path: Path, text: str) -> None:
    (tmp_path / "plan.json").write_text(text)
    got = estimated_memory_parts(tmp_path)
    assert got == ([{"weights": 5}] if text.startswith('{"estimate": {"stages"') else None)
