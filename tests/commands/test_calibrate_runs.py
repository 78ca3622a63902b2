"""``pptune calibrate --runs``: JSONL runs and training logs -> a cluster JSON that --cluster accepts; refusals are one
line, exit 2, and leave no output file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pptune.calibrate.runs_fit import Run, apply_constants, predict_run, start_values
from pptune.cli import main
from pptune.commands.calibrate import batch_defaults
from pptune.hardware import load_cluster

BASE = load_cluster("a100-80g")
MODEL = "gpt:layers=24,hidden=2048,heads=16"
TRUTH = {**start_values(BASE), "compute_efficiency": 0.85, "inter_node_efficiency": 0.7}
CONFIGS = [(1, 1, 8, 4, 256), (2, 1, 8, 4, 256), (1, 2, 16, 2, 256), (2, 2, 8, 2, 512), (1, 1, 16, 8, 512)]


def line(tp: int, pp: int, dp: int, mbs: int, gbs: int) -> dict:
    return {"model": MODEL, "tp": tp, "pp": pp, "dp": dp, "micro_batch_size": mbs, "global_batch_size": gbs,
            "partition": "uniform"}


def measured(config: tuple, noise: float = 0.0, rng: random.Random | None = None) -> float:
    item = {**batch_defaults(), "model": MODEL, "cluster": BASE, "dtype": "bf16", **line(*config)}
    ms = predict_run(Run(label="", item=item, measured_step_ms=1.0), TRUTH).step_time_ms
    return ms * (1 + (rng.gauss(0, noise) if rng else 0.0))


def runs_file(tmp_path: Path, configs=CONFIGS, **extra) -> Path:
    rng = random.Random(3)
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps({**line(*c), "measured_step_ms": measured(c, 0.005, rng), **extra}) + "\n"
                            for c in configs))
    return path


def test_calibrate_runs_writes_a_cluster_estimate_accepts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--runs", str(runs_file(tmp_path)), "--cluster", "a100-80g", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fitted compute efficiency x0.8" in text and "held-out" in text and "leave-one-out" in text
    cluster = load_cluster(out)
    fit = cluster.calibration["runs_fit"]
    assert len(fit["errors_leave_one_out"]) == 5 and max(abs(e) for e in fit["errors_leave_one_out"]) < 0.05
    assert cluster.gpu.matmul_efficiency == pytest.approx(BASE.gpu.matmul_efficiency * 0.85, rel=0.03)
    # --cluster reads it back for a job of another size, and predicts what the fit predicted
    capsys.readouterr()
    assert main(["estimate", MODEL, "--cluster", str(out), "--dp", "32", "--global-batch-size", "256",
                 "--micro-batch-size", "8", "--json"]) == 0
    step = json.loads(capsys.readouterr().out)["step_time_ms"]
    config = {**batch_defaults(), "model": MODEL, "cluster": BASE, "dp": 32, "micro_batch_size": 8,
              "global_batch_size": 256, "dtype": "bf16"}
    fitted = predict_run(Run(label="", item=config, measured_step_ms=1.0), fit["constants"]).step_time_ms
    assert step == pytest.approx(fitted, rel=1e-9)
    assert step == pytest.approx(measured((1, 1, 32, 8, 256)), rel=0.08)  # a job larger than any it was fitted on


def test_calibrate_runs_from_megatron_logs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    logs = []
    for i, (tp, pp, dp, mbs, gbs) in enumerate(CONFIGS[:3]):
        args = {"tensor_model_parallel_size": tp, "pipeline_model_parallel_size": pp, "data_parallel_size": dp,
                "micro_batch_size": mbs, "global_batch_size": gbs, "num_layers": 24, "hidden_size": 2048,
                "num_attention_heads": 16, "bf16": True, "fp16": False, "deepspeed": True, "zero_stage": 0}
        block = "\n".join(f"  {k} {'.' * (48 - len(k))} {v}" for k, v in sorted(args.items()))
        ms = measured((tp, pp, dp, mbs, gbs))
        iters = "\n".join(f" iteration {10 * j:8d}/     100 | elapsed time per iteration (ms): {ms:.1f} |"
                          for j in range(1, 4))
        path = tmp_path / f"run{i}.log"
        path.write_text(f"------------------------ arguments ------------------------\n{block}\n"
                        f"-------------------- end of arguments ---------------------\n{iters}\n")
        logs.append(str(path))
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--runs", *logs, "--cluster", "a100-80g", "--partition", "uniform", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "median of 2 Megatron 'elapsed time per iteration (ms)' figures" in text
    assert "configuration from the logged arguments" in text and out.is_file()


def _refused(args: list[str], out: Path, capsys: pytest.CaptureFixture, message: str) -> None:
    assert main([*args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def test_malformed_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = runs_file(tmp_path)
    path.write_text(path.read_text() + "{\"tp\": 2,\n")
    _refused(["calibrate", "--runs", str(path), "--cluster", "a100-80g"], tmp_path / "c.json", capsys,
             "line 6: not valid JSON")


def test_a_run_with_an_invalid_configuration_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = runs_file(tmp_path)
    path.write_text(path.read_text() + json.dumps({**line(3, 1, 8, 4, 256), "measured_step_ms": 100.0}) + "\n")
    _refused(["calibrate", "--runs", str(path), "--cluster", "a100-80g"], tmp_path / "c.json", capsys, "line 6: ")


def test_too_few_runs_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _refused(["calibrate", "--runs", str(runs_file(tmp_path, CONFIGS[:1])), "--cluster", "a100-80g"],
             tmp_path / "c.json", capsys, "needs at least 2 runs")


def test_a_fit_the_runs_cannot_identify_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    single_node = [(1, 1, 8, 4, 256), (2, 1, 4, 4, 256)]
    fixed = ["--fix", "compute_efficiency", "--fix", "per_microbatch_overhead_ms", "--fix", "intra_node_efficiency"]
    _refused(["calibrate", "--runs", str(runs_file(tmp_path, single_node)), "--cluster", "a100-80g", *fixed],
             tmp_path / "c.json", capsys, "identify none of the constants")


def test_a_log_without_times_and_an_unknown_constant_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = tmp_path / "train.log"
    log.write_text("starting\nnothing timed here\n")
    _refused(["calibrate", "--runs", str(log), "--cluster", "a100-80g"], tmp_path / "c.json", capsys,
             "no per-iteration time found")
    _refused(["calibrate", "--runs", str(runs_file(tmp_path)), "--cluster", "a100-80g", "--fix", "warp"],
             tmp_path / "c.json", capsys, "--fix warp: unknown constant")


def test_the_calibrated_cluster_is_the_fit_applied_to_the_given_cluster() -> None:
    assert apply_constants(BASE, TRUTH).inter_node_gbps == pytest.approx(BASE.inter_node_gbps * 0.7)
