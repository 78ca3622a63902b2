"""A space no larger than the trial budget is evaluated whole; progress bars draw only on a terminal."""

from __future__ import annotations

import sys

import pytest

from pptune.planner import Fixed, PlanSettings, plan

JOB = dict(cluster="a100-80g", gpus=8, global_batch_size=32)
FIXED = Fixed(tp=1, pp=2, zero_stage=1, recompute="none")  # a few dozen configurations


def _plan(**settings):
    return plan("gpt2-small", **JOB, settings=PlanSettings(fixed=FIXED, max_micro_batch_size=8, **settings))


def test_a_space_within_the_budget_is_searched_exhaustively():
    whole = _plan(exhaustive=True)
    size = len(whole.ranking)
    assert 1 < size < 200
    auto = _plan(trials=size)
    assert auto.settings.method == "exhaustive" and auto.study is None
    assert list(auto.ranking["label"]) == list(whole.ranking["label"])
    sampled = _plan(trials=size - 1)  # one trial short of the space: TPE as asked
    assert sampled.settings.method == "tpe" and sampled.study is not None


def test_a_study_of_the_users_own_stays_a_study(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    kept = _plan(trials=100, storage=url)  # more trials than configurations, but the user wants the study
    assert kept.settings.method == "tpe" and (tmp_path / "s.db").exists()


@pytest.mark.parametrize("tty", [False, True])
@pytest.mark.parametrize("exhaustive", [False, True])
def test_progress_bar_only_on_a_terminal(tty, exhaustive, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)  # capsys's stderr; a batch job's log is not a terminal
    plan("gpt2-small", **JOB, progress=True,
         settings=PlanSettings(fixed=FIXED, max_micro_batch_size=8, trials=3, exhaustive=exhaustive))
    err = capsys.readouterr().err
    assert ("pptune plan" in err) is tty and ("\r" in err) is tty
