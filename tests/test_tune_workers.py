"""Two ``tune`` workers on one Optuna journal file: no configuration runs twice, no finished trial is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import optuna
import pytest

from pptune.errors import ConfigError
from pptune.parallel import ParallelConfig
from pptune.planner.study import close_storage, open_storage
from pptune.tune import TuneSettings, _Objective, tune

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 8


def test_two_workers_share_one_journal(tmp_path):
    """Both with the same seed, so their samplers propose the same configurations: the storage must arbitrate."""
    journal = tmp_path / "tune.journal"
    runs_log = tmp_path / "runs.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "pptune.testing.tune_worker", "--storage", f"journal:{journal}",
                               "--out", str(tmp_path / f"w{i}"), "--seed", "0", "--trials", str(TRIALS),
                               "--runs-log", str(runs_log), "--run-s", "1.5"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for i in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ran = [line.split(" ", 1) for line in runs_log.read_text().splitlines()]
    assert len({pid for pid, _ in ran}) == 2  # both workers ran trials
    counts = Counter(label for _, label in ran)
    assert max(counts.values()) == 1, counts  # no configuration ran twice
    storage = open_storage(f"journal:{journal}")
    try:
        (summary,) = storage.get_all_studies()
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
    finally:
        close_storage(storage)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "FAIL")]
    assert len(finished) >= TRIALS and not [t for t in trials if t.state.name == "RUNNING"]
    first_runs = {t.user_attrs["label"]: t for t in finished if "repeat_of" not in t.user_attrs
                  and "measured_ms" in t.user_attrs}
    assert set(first_runs) == set(counts)  # every run is a finished trial of the study: none lost
    for t in finished:
        if "repeat_of" in t.user_attrs:  # a repeat took the first run's result
            assert t.value == study.trials[t.user_attrs["repeat_of"]].value
            assert t.user_attrs["label"] == study.trials[t.user_attrs["repeat_of"]].user_attrs["label"]


def test_a_worker_needs_a_shared_storage(tmp_path):
    with pytest.raises(ConfigError, match="give --storage"):
        tune("gpt2-small", cluster="local-cpu", gpus=2, global_batch_size=4, out_dir=tmp_path,
             settings=TuneSettings(), shared=True)


CONFIG = ParallelConfig(tp=1, pp=2, dp=1, micro_batch_size=4, num_microbatches=1)


def _arbiter() -> _Objective:
    return _Objective(result=None, evaluator=None, settings=TuneSettings(timeout_s=30), trials_dir=Path("."),  # type: ignore[arg-type]
                      command=None, log=print, run_plan=None, shared=True, poll_s=0.01)  # type: ignore[arg-type]


def _decide_in_thread(arbiter: _Objective, trial) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(arbiter._shared_earlier(trial, CONFIG)), daemon=True)
    thread.start()
    return thread, out


def test_a_lower_trial_that_intends_late_waits_for_the_one_running():
    """The race CI hit: trial 1 checked and started before trial 0 had written its configuration."""
    study = optuna.create_study()
    arbiter = _arbiter()
    first, second = study.ask(), study.ask()
    second.set_user_attr("config", CONFIG.to_dict())
    assert arbiter._shared_earlier(second, CONFIG) is None  # nobody else intends it: trial 1 runs it
    first.set_user_attr("config", CONFIG.to_dict())
    thread, out = _decide_in_thread(arbiter, first)
    thread.join(0.3)
    assert thread.is_alive()  # trial 0 waits for the run that started, though its number is lower
    study.tell(second, 1.0)
    thread.join(5)
    assert [t.number for t in out] == [second.number]


def test_of_two_trials_that_intend_one_config_the_lower_runs_it():
    study = optuna.create_study()
    arbiter = _arbiter()
    first, second = study.ask(), study.ask()
    for t in (first, second):
        t.set_user_attr("config", CONFIG.to_dict())
    thread, out = _decide_in_thread(arbiter, second)
    thread.join(0.3)
    assert thread.is_alive()
    assert arbiter._shared_earlier(first, CONFIG) is None
    study.tell(first, 2.0)
    thread.join(5)
    assert [t.number for t in out] == [first.number]
