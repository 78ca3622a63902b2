"""kshot: published runs become calibrate --runs lines; draws are seeded; scores are the held-out runs' errors."""

from __future__ import annotations

import math

import pytest

from pptune.calibrate.kshot import Scores, group_key, kshot, published_run, score
from pptune.calibrate.published_runs import mtnlg_runs
from pptune.calibrate.runs_fit import Run, predict_run


def test_score_statistics_and_within_group_spearman() -> None:
    runs = [published_run(r) for r in mtnlg_runs()]  # one job per GPU count: no group of 3
    measured = [r.measured_step_ms for r in runs]
    s = score(runs, [m * f for m, f in zip(measured, (1.1, 0.9, 1.0), strict=True)])
    assert s.count == 3 and s.mean_abs == pytest.approx(0.2 / 3) and s.median_abs == pytest.approx(0.1)
    assert s.max_abs == pytest.approx(0.1) and s.signed_mean == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(s.spearman)
    same_job = [Run(label=str(i), item={**runs[0].item}, measured_step_ms=m) for i, m in enumerate((1.0, 2.0, 3.0))]
    assert len({group_key(r) for r in same_job}) == 1
    assert score(same_job, [1.0, 3.0, 2.0]).spearman == pytest.approx(0.5)
    avg = Scores.average([score(same_job, [1.0, 2.0, 3.0]), score(same_job, [3.0, 2.0, 1.0])])
    assert avg.spearman == pytest.approx(0.0)


def test_kshot_zero_is_the_uncalibrated_prediction_and_draws_are_seeded() -> None:
    runs = [published_run(r) for r in mtnlg_runs()]
    zero = kshot("MT-NLG", runs, 0)
    assert zero.scores is not None and zero.scores.signed_mean == pytest.approx(
        sum(predict_run(r).step_time_ms / r.measured_step_ms - 1 for r in runs) / 3)
    one, again = kshot("MT-NLG", runs, 1, draws=2), kshot("MT-NLG", runs, 1, draws=2)
    assert one == again and one.scores is not None and one.scores.count == 2
    assert all(note.startswith("fitted compute efficiency") for note in one.fitted)
    assert kshot("MT-NLG", runs, 3).scores is None  # nothing left to predict


def test_a_published_run_is_predicted_as_multinode_md_predicts_it() -> None:
    from pptune.calibrate.multinode import predict
    from pptune.calibrate.published_runs import bloom_run, sc21_runs

    for run in (mtnlg_runs()[0], bloom_run(), sc21_runs()[4]):
        assert predict_run(published_run(run)).step_time_ms == pytest.approx(predict(run).step_time_ms, rel=1e-12)
