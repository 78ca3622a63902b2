"""``pptune plan``: files and report, --json, same inputs same files, one-line errors with exit 2, SIGKILL + --resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pptune.cli import main
from pptune.planner import Fixed, PlanSettings, plan

ROOT = Path(__file__).resolve().parents[2]
BASE = ["gpt2-small", "--cluster", "a100-80g", "--gpus", "8", "--global-batch-size", "32", "--zero", "1",
        "--max-micro-batch-size", "8", "--no-progress", "--no-figures"]


def test_writes_the_plan_and_prints_the_recommendation(tmp_path, capsys):
    out = tmp_path / "plan"
    args = [a for a in BASE if a != "--no-figures"]
    assert main(["plan", *args, "--trials", "30", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recommended: tp" in text and "tokens/s" in text and "breakdown (ms): compute" in text
    assert text.count("\n  1  ") == 1  # the ranking table's first row
    names = {p.name for p in out.iterdir()}
    assert {"plan.json", "ds_config.json", "pipeline.json", "launch.sh", "megatron_args.txt", "ranking.csv",
            "HOW_TO_RUN.md", "study.db", "figures"} <= names
    assert any((out / "figures").iterdir())
    data = json.loads((out / "plan.json").read_text())
    assert data["command"].startswith("pptune plan gpt2-small") and data["search"]["trials"] == 30
    assert data["search"]["storage"] == f"sqlite:///{(out / 'study.db').resolve()}"


def test_json_output(tmp_path, capsys):
    assert main(["plan", *BASE, "--trials", "20", "--out", str(tmp_path / "p"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["zero_stage"] == 1 and data["estimate"]["feasible"] is True
    assert data["evaluations"] == 20 and data["out"] == str(tmp_path / "p")


def test_same_inputs_same_files(tmp_path, capsys):
    out = tmp_path / "plan"
    args = ["plan", *BASE, "--trials", "25", "--seed", "7", "--out", str(out)]
    assert main(args) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "study.db"}
    assert "ranking.csv" in first and "plan.json" in first
    assert main(args) == 0  # the old study in OUT/study.db is replaced, not resumed
    second = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "study.db"}
    assert first == second


def test_exhaustive_needs_no_storage(tmp_path, capsys):
    out = tmp_path / "plan"
    assert main(["plan", *BASE, "--exhaustive", "--out", str(out)]) == 0
    assert not (out / "study.db").exists()
    assert "exhaustive, 214 configurations" in capsys.readouterr().out


@pytest.mark.parametrize(("extra", "message"), [
    (["--storage", "nonsense://"], "cannot open it as an Optuna RDB storage"),
    (["--gpus", "13"], "13 GPUs"),
    (["--gpus", "64", "--global-batch-size", "1", "--zero", "0"], "global batch 1 is smaller than the smallest data-parallel size"),
    (["--tp", "5"], "--tp 5 does not divide 8 GPUs"),
    (["--trials", "0"], "--trials must be positive"),
    (["--ds-override", "train_batch_size=8"], "would change what the plan is estimated for"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    out = tmp_path / "plan"
    args = ["plan", *BASE, "--trials", "5", "--out", str(out)]
    for i in range(0, len(extra), 2):  # later options win in argparse
        args += extra[i:i + 2]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pptune plan: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_nothing_fits_leaves_no_directory(tmp_path, capsys):
    out = tmp_path / "big"
    assert main(["plan", "gpt3-175b", "--cluster", "a100-80g", "--gpus", "8", "--global-batch-size", "64",
                 "--trials", "15", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lowest peak memory found:" in err and "has 80 GiB" in err and "\n" not in err
    assert not out.exists()


def test_refuses_to_replace_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["plan", *BASE, "--trials", "5", "--out", str(tmp_path)]) == 2
    assert "not a pptune plan directory" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _complete(db: Path) -> list[tuple[int, float]]:
    """(number, value) of the COMPLETE trials, read with sqlite3 while the planner may still be writing."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        try:
            rows = conn.execute(
                "SELECT t.number, v.value FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
                "WHERE t.state = 'COMPLETE' AND v.objective = 0 ORDER BY t.number").fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return []
    return rows


def _running(db: Path) -> list[int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return [n for (n,) in conn.execute("SELECT number FROM trials WHERE state = 'RUNNING' ORDER BY number")]


def test_sigkill_then_resume_keeps_finished_trials(tmp_path):
    """Kill a running search with SIGKILL, resume it, and end with the exhaustive best.

    The search is killed at a known point, whatever the machine's speed: ``pptune.testing.plan_pause`` stops it
    when trial 5 starts (trials 0-4 stored as complete, trial 5 running) and says so on stdout.
    TPE after a resume is not the sequence an uninterrupted run draws (same seed, different history), so
    "same best" is made deterministic by a small space in which every run reaches the exhaustive optimum.
    """
    trials, paused = 60, 5
    args = [sys.executable, "-m", "pptune", "plan", *BASE, "--trials", str(trials)]
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONPATH=str(ROOT))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pptune.testing.plan_pause", str(paused), "plan", *BASE,
                             "--trials", str(trials), "--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    watchdog = threading.Timer(300, os.killpg, (proc.pid, signal.SIGKILL))  # a hung search ends the read below
    watchdog.start()
    try:
        said = next((line for line in iter(proc.stdout.readline, "") if line.startswith("paused at trial")), None)
        assert said == f"paused at trial {paused}\n", "the search ended (or hung) before trial 5 started"
        assert proc.poll() is None
    finally:
        watchdog.cancel()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    before = _complete(out / "study.db")
    assert [n for n, _ in before] == list(range(paused))
    assert _running(out / "study.db") == [paused]  # killed inside a trial: the resume must not count it
    assert not (out / "plan.json").exists()  # killed before writing the plan
    subprocess.run([*args, "--out", str(out), "--resume"], env=env, check=True, capture_output=True)
    after = _complete(out / "study.db")
    assert len(after) == trials
    assert set(before) <= set(after)  # every finished trial kept, with its value
    resumed = json.loads((out / "plan.json").read_text())
    straight = tmp_path / "straight"
    subprocess.run([*args, "--out", str(straight)], env=env, check=True, capture_output=True)
    uninterrupted = json.loads((straight / "plan.json").read_text())
    exhaustive = plan("gpt2-small", cluster="a100-80g", gpus=8, global_batch_size=32,
                      settings=PlanSettings(max_micro_batch_size=8, fixed=Fixed(zero_stage=1), exhaustive=True))
    assert resumed["config"] == uninterrupted["config"] == exhaustive.best.to_dict()
    assert resumed["search"]["evaluations"] == trials and resumed["search"]["resume"] is True


def test_plan_carries_the_overlap_and_attention_knobs(tmp_path, capsys):
    out = tmp_path / "plan"
    args = ["gpt2-small", "--cluster", "a100-80g", "--gpus", "16", "--global-batch-size", "64", "--target", "megatron",
            "--tp", "2", "--pp", "2", "--zero", "1", "--micro-batch-size", "2", "--exhaustive", "--no-figures",
            "--no-overlap-param-gather", "--attention", "unfused", "--out", str(out)]
    assert main(["plan", *args]) == 0
    capsys.readouterr()
    config = json.loads((out / "plan.json").read_text())["config"]
    assert (config["overlap_grad_reduce"], config["overlap_param_gather"]) == (True, False)
    flags = (out / "megatron_args.txt").read_text()
    assert "--overlap-grad-reduce" in flags and "--overlap-param-gather" not in flags
    assert "--attention-backend unfused" in flags
