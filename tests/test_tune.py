"""pptune tune: the cost model's top-k run first, failures are failed trials with a reason, repeats are not re-run,
storage and resume follow pptune plan, and the CLI reports the measured best against the predicted best."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from pptune.cli import main
from pptune.errors import ConfigError, RunError
from pptune.parallel import ParallelConfig
from pptune.planner import Fixed, PlanSettings, build_space
from pptune.planner.study import trial_config
from pptune.testing.records import fake_measured
from pptune.tune import TuneSettings, failure_kind, trial_params, tune

MODEL = "gpt:layers=2,hidden=64,heads=2,seq=32,vocab=128"
PLAN = PlanSettings(exhaustive=True, dtype="fp32", fixed=Fixed(tp=1), max_micro_batch_size=4)


class FakeRuns:
    """Stands in for run_plan: 1.1x the prediction, except configurations told to fail."""

    def __init__(self, fail: dict[str, str] | None = None) -> None:
        self.fail = fail or {}
        self.ran: list[str] = []

    def __call__(self, path, *, steps: int, warmup: int, timeout_s: float):
        plan = json.loads((Path(path) / "plan.json").read_text())
        label = plan["label"]
        self.ran.append(label)
        if label in self.fail:
            raise RunError(self.fail[label].format(path=path))
        config = ParallelConfig(**plan["config"])
        return fake_measured(config, 1.1 * plan["estimate"]["step_time_ms"])


def test_trial_params_reproduce_every_configuration() -> None:
    space = build_space(num_blocks=4, gpus=4, gpus_per_node=4, global_batch_size=8, num_heads=4, target="megatron",
                        max_micro_batch_size=4)
    configs = list(space.configs())
    assert len(configs) > 50
    for config in configs:
        assert trial_config(space, optuna.trial.FixedTrial(trial_params(space, config))) == config


def test_failure_kinds() -> None:
    assert failure_kind("training of /x timed out after 5 s and was stopped; log: l") == "timeout"
    assert failure_kind("training of /x failed (exit code 1): out of memory; log: l") == "out_of_memory"
    assert failure_kind("training of /x failed (exit code 1): ValueError: boom; log: l") == "failed"


def test_tune_seeds_top_k_records_failures_and_resumes(tmp_path: Path) -> None:
    runs = FakeRuns()
    result, _ = tune(MODEL, cluster="local-cpu", gpus=2, global_batch_size=4, out_dir=tmp_path / "probe",
                     settings=TuneSettings(top_k=1, trials=1), plan_settings=PLAN, run_plan=runs, log=lambda _: None)
    top = list(result.ranking[result.ranking["feasible"]]["label"][:3])
    runs = FakeRuns(fail={top[1]: "training of {path} timed out after 5 s and was stopped; log: x"})
    out = tmp_path / "tune"
    settings = TuneSettings(top_k=3, trials=5, seed=1)
    _, study = tune(MODEL, cluster="local-cpu", gpus=2, global_batch_size=4, out_dir=out, settings=settings,
                    plan_settings=PLAN, run_plan=runs, log=lambda _: None)
    trials = study.get_trials()
    assert [t.user_attrs["label"] for t in trials[:3]] == top  # the cost model's top-3, in its order
    assert [t.state.name for t in trials[:3]] == ["COMPLETE", "FAIL", "COMPLETE"]
    failed = trials[1].user_attrs
    assert failed["failure_kind"] == "timeout" and "timed out" in failed["failure"]
    assert len(trials) == 5 and all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    assert len(runs.ran) == len(set(runs.ran))  # a repeated proposal is never run twice
    for t in trials:
        if t.state.name == "COMPLETE" and "repeat_of" not in t.user_attrs:
            assert t.user_attrs["measured_ms"] == pytest.approx(1.1 * t.user_attrs["predicted_ms"])
            assert (Path(t.user_attrs["plan_dir"]) / "pipeline.json").exists()
    assert (out / "tune.db").exists()

    with pytest.raises(ConfigError, match="already exists"):
        tune(MODEL, cluster="local-cpu", gpus=2, global_batch_size=4, out_dir=out, settings=settings,
             plan_settings=PLAN, run_plan=runs, log=lambda _: None)
    before = len(runs.ran)
    _, study = tune(MODEL, cluster="local-cpu", gpus=2, global_batch_size=4, out_dir=out, resume=True,
                    settings=TuneSettings(top_k=3, trials=6, seed=1), plan_settings=PLAN, run_plan=runs,
                    log=lambda _: None)
    assert len(study.get_trials()) == 6  # one more trial; the enqueued seeds were not enqueued again
    assert len(runs.ran) - before <= 1


def test_tune_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top-k"):
        tune(MODEL, cluster="local-cpu", gpus=2, global_batch_size=4, out_dir=tmp_path, settings=TuneSettings(top_k=0),
             run_plan=FakeRuns())


def test_cli_reports_measured_vs_predicted_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    import pptune.runtime.launch

    monkeypatch.setattr(pptune.runtime.launch, "run_plan", FakeRuns())
    out = tmp_path / "t"
    code = main(["tune", MODEL, "--gpus", "2", "--global-batch-size", "4", "--cluster", "local-cpu", "--top-k", "2",
                 "--trials", "2", "--max-micro-batch-size", "4", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "measured best:" in text and "predicted best:" in text
    rows = (out / "tune.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,label,predicted_rank") and len(rows) == 3
    assert main(["tune", MODEL, "--gpus", "0", "--global-batch-size", "4", "--cluster", "local-cpu"]) == 2


def test_tune_tries_tensor_parallel_configurations(tmp_path: Path) -> None:
    # pptune's runtime has tensor-parallel layers: tp 2 trials are written as runnable plan directories.
    from pptune.runtime.plan_files import load_run_plan
    from pptune.runtime.topology import check_tensor_parallel

    runs = FakeRuns()
    plan = PlanSettings(exhaustive=True, dtype="fp32", max_micro_batch_size=2)
    wide = "gpt:layers=2,hidden=512,heads=8,seq=128,vocab=128"  # one sample per step: tp 2 is predicted fastest
    result, study = tune(wide, cluster="local-cpu", gpus=2, global_batch_size=1, out_dir=tmp_path / "tp",
                         settings=TuneSettings(top_k=2, trials=3), plan_settings=plan, run_plan=runs, log=lambda _: None)
    assert {int(t) for t in result.ranking["tp"]} == {1, 2}
    tp_trials = [t for t in study.trials if t.user_attrs.get("config", {}).get("tp") == 2 and "plan_dir" in t.user_attrs]
    assert tp_trials and any(label.startswith("tp2") for label in runs.ran)
    run = load_run_plan(tp_trials[0].user_attrs["plan_dir"])
    assert run.tp == 2 and check_tensor_parallel(run) is not None
