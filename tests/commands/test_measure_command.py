"""``pptune measure``: options, predicted-vs-measured report and relative error (the run itself is stubbed here)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pptune.commands import measure
from pptune.errors import ConfigError
from pptune.runtime.measured import Measured, RankRecord, TimerStat, stage_records


def _measured(boundaries: tuple[int, ...] = (0, 2, 6)) -> Measured:
    def rank(r: int, start: int, stop: int, timers: dict[str, float]) -> RankRecord:
        return RankRecord(rank=r, stage=r, dp_rank=0, layer_start=start, layer_stop=stop, num_forward_funcs=stop - start,
                          param_count=10, peak_memory_bytes=1,
                          timers={k: TimerStat(per_step_ms=v, calls_per_step=4) for k, v in timers.items()})

    ranks = (rank(0, 0, 2, {"ForwardPass": 4.0, "BackwardPass": 8.0, "SendActivation": 1.0, "RecvGrad": 2.5,
                            "ReduceTiedGrads": 0.5, "OptimizerStep": 3.0}),
             rank(1, 2, 6, {"ForwardPass": 9.0, "BackwardPass": 18.0, "RecvActivation": 7.0, "SendGrad": 1.5}))
    return Measured(
        plan_dir="p", model="tiny", seq_len=32, pp=2, dp=1, tp=1, world_size=2, partition_method="parameters",
        boundaries=boundaries, planned_boundaries=(0, 2, 6), micro_batch_size=2, num_microbatches=4,
        train_batch_size=8, dtype="fp32", zero_stage=0, activation_checkpoint_interval=0, optimizer="AdamW", warmup=1,
        step_times_ms=(40.0, 50.0, 60.0), final_loss=4.0, deepspeed_timers=False, stages=stage_records(ranks),
        ranks=ranks, device="cpu", device_name="cpu", threads=1, torch_version="t", deepspeed_version="d", date="x",
        command="c",
    )


@pytest.fixture
def make_plan(tmp_path: Path):
    """A minimal two-stage plan directory (the files pptune measure reads before launching)."""

    def make(name: str = "plan", predicted_ms: float = 50.0) -> Path:
        path = tmp_path / name
        path.mkdir()
        model = {"name": "tiny", "num_layers": 4, "hidden_size": 64, "num_heads": 2, "ffn_hidden_size": 256,
                 "vocab_size": 128, "seq_len": 32}
        pipeline = {"num_stages": 2, "topology": {"pp": 2, "tp": 1, "dp": 1}, "partition_method": "explicit",
                    "boundaries": [0, 2, 6], "model": model, "seq_len": 32}
        ds = {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4}
        (path / "pipeline.json").write_text(json.dumps(pipeline))
        (path / "ds_config.json").write_text(json.dumps(ds))
        (path / "plan.json").write_text(json.dumps({"estimate": {"step_time_ms": predicted_ms}}))
        return path

    return make


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    measure.add_parser(parser.add_subparsers(), "measure")
    return parser.parse_args(["measure", *argv])


def test_defaults() -> None:
    args = _parse(["PLAN"])
    assert (args.steps, args.warmup, args.timeout, args.nproc, args.ds_timers) == (10, 3, 600.0, None, False)


def test_relative_error_sign() -> None:
    assert measure.relative_error(60.0, 50.0) == pytest.approx(0.2)
    assert measure.relative_error(40.0, 50.0) == pytest.approx(-0.2)


def test_summary_lines() -> None:
    text = "\n".join(measure.summary_lines(_measured(), 55.0))
    assert "median 50.0 ms (min 40.0, max 60.0, 3 steps)" in text
    assert "predicted 55.0 ms (plan.json): error +10.0%" in text
    assert "stages built: [0, 2, 6] by parameters (planned [0, 2, 6])" in text and "warning" not in text
    stage0 = next(line for line in text.splitlines() if line.strip().startswith("0 "))
    assert stage0.split()[1:] == ["0-1", "4.0", "8.0", "1.0", "2.5", "0.5", "3.0"]
    stage1 = next(line for line in text.splitlines() if line.strip().startswith("1 "))
    assert stage1.split()[1:] == ["2-5", "9.0", "18.0", "1.5", "7.0", "0.0", "0.0"]
    other = "\n".join(measure.summary_lines(_measured((0, 3, 6)), None))
    assert "no estimate.step_time_ms" in other and "warning: DeepSpeed built other stages than planned" in other


def test_memory_lines_compare_the_tensor_parts() -> None:
    import dataclasses

    m = _measured()
    assert "memory: not recorded" in measure.memory_lines(m)[0]  # a run from before the probe
    ranks = tuple(dataclasses.replace(r, peak_allocated_bytes=(r.rank + 1) * 2**20, memory_source="probe")
                  for r in m.ranks)
    estimated = [{"weights": 2**19, "activations": 2**19, "cuda_context": 2**30},
                 {"weights": 2**20, "reserve": 2**30}]  # framework and an old plan's reserve are not tensors
    m = dataclasses.replace(m, ranks=ranks, stages=stage_records(ranks, estimated))
    lines = measure.memory_lines(m)
    assert "probe" in lines[0]
    assert lines[1].split() == ["0", "1.0", "-", "1.0", "+0.0%"]
    assert lines[2].split() == ["1", "2.0", "-", "1.0", "-50.0%"]


def test_run_prints_predicted_vs_measured(make_plan, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    plan_dir: Path = make_plan(predicted_ms=45.0)
    seen = {}

    def fake_run_plan(path, **kwargs):
        seen.update(kwargs, path=path)
        return _measured()

    monkeypatch.setattr("pptune.runtime.launch.run_plan", fake_run_plan)
    assert measure.run(_parse([str(plan_dir), "--steps", "4", "--warmup", "0", "--timeout", "30"])) == 0
    out = capsys.readouterr().out
    assert "predicted 45.0 ms (plan.json): error -10.0%" in out and "median 50.0 ms" in out
    assert seen["steps"] == 4 and seen["warmup"] == 0 and seen["timeout_s"] == 30 and seen["nproc"] is None
    assert seen["log_path"] == str(plan_dir / "measure.log")


def test_bad_options_and_plans_are_config_errors(make_plan, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--steps >= 1"):
        measure.run(_parse([str(make_plan()), "--steps", "0"]))
    bad = make_plan("bad")
    data = json.loads((bad / "pipeline.json").read_text())
    data["boundaries"] = [0, 6]
    (bad / "pipeline.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="pp 2 needs 3"):
        measure.run(_parse([str(bad)]))
