"""measured.json: round trip, derived figures, per-stage grouping, atomic write and one-line schema errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pptune.errors import SchemaError
from pptune.runtime.measured import (
    Measured,
    RankRecord,
    TimerStat,
    load_measured,
    save_measured,
    stage_records,
)


def _rank(rank: int, stage: int, fwd_ms: float, *, dp_rank: int = 0) -> RankRecord:
    start, stop = (0, 2) if stage == 0 else (2, 6)
    return RankRecord(rank=rank, stage=stage, dp_rank=dp_rank, layer_start=start, layer_stop=stop,
                      num_forward_funcs=stop - start, param_count=1000 * (stage + 1), peak_memory_bytes=2**20,
                      timers={"ForwardPass": TimerStat(per_step_ms=fwd_ms, calls_per_step=4.0)})


def make_measured(**changes: object) -> Measured:
    ranks = (_rank(0, 0, 4.0), _rank(1, 1, 8.0), _rank(2, 0, 6.0, dp_rank=1), _rank(3, 1, 10.0, dp_rank=1))
    fields = dict(
        plan_dir="/p", model="tiny", seq_len=32, pp=2, dp=2, tp=1, world_size=4, partition_method="explicit",
        boundaries=(0, 2, 6), planned_boundaries=(0, 2, 6), micro_batch_size=2, num_microbatches=4,
        train_batch_size=16, dtype="fp32", zero_stage=0, activation_checkpoint_interval=0, optimizer="AdamW",
        warmup=1, step_times_ms=(30.0, 10.0, 20.0, 40.0), final_loss=4.5, deepspeed_timers=False,
        stages=stage_records(ranks), ranks=ranks, device="cpu", device_name="test cpu", threads=1,
        torch_version="2.13.0", deepspeed_version="0.19.8", date="2026-01-01T00:00:00+00:00", command="pptune measure /p",
    )
    fields.update(changes)
    return Measured(**fields)  # type: ignore[arg-type]


def test_derived_figures() -> None:
    m = make_measured()
    assert m.steps == 4
    assert m.median_step_ms == pytest.approx(25.0)
    assert m.mean_step_ms == pytest.approx(25.0)
    assert m.samples_per_s == pytest.approx(16 / 0.025)
    assert TimerStat(per_step_ms=8.0, calls_per_step=4.0).per_call_ms == pytest.approx(2.0)
    assert TimerStat(per_step_ms=0.0, calls_per_step=0.0).per_call_ms == 0.0


def test_stage_records_average_over_data_parallel_ranks() -> None:
    stages = make_measured().stages
    assert [(s.stage, s.layer_start, s.layer_stop) for s in stages] == [(0, 0, 2), (1, 2, 6)]
    assert stages[0].timers_ms["ForwardPass"] == pytest.approx(5.0)
    assert stages[1].timers_ms["ForwardPass"] == pytest.approx(9.0)


def test_round_trip_and_atomic_write(tmp_path: Path) -> None:
    m = make_measured()
    path = save_measured(m, tmp_path / "out" / "measured.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["measured.json"]  # no temporary file left
    data = json.loads(path.read_text())
    assert data["median_step_ms"] == pytest.approx(25.0)  # derived keys written for other readers
    assert load_measured(path) == m


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    bad = make_measured(final_loss=object())  # not JSON-serialisable: json.dump fails midway
    with pytest.raises(TypeError):
        save_measured(bad, tmp_path / "measured.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(schema_version=99), "unknown version 99"),
        (lambda d: d.pop("model"), "field 'model': missing"),
        (lambda d: d.update(step_times_ms=[]), "non-empty list of positive numbers"),
        (lambda d: d.update(step_times_ms=[10.0, -1.0]), "non-empty list of positive numbers"),
        (lambda d: d.update(pp="2"), "field 'pp': expected int"),
        (lambda d: d.update(boundaries=[0, 6]), "pp 2 needs 3"),
        (lambda d: d["ranks"][1].pop("stage"), "ranks[1]: field 'stage': missing"),
        (lambda d: d["ranks"][0]["timers"]["ForwardPass"].update(per_step_ms=float("nan")), "non-negative and finite"),
    ],
)
def test_schema_errors_name_file_and_field(tmp_path: Path, edit, message: str) -> None:
    data = make_measured().to_dict()
    edit(data)
    path = tmp_path / "measured.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        load_measured(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="cannot read"):
        load_measured(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SchemaError, match="not valid JSON"):
        load_measured(tmp_path / "bad.json")
