"""Prediction-quality figures: Spearman against scipy (ties included), relative errors, the model's pick and its gap."""

from __future__ import annotations

import math
import random

import pytest

from pptune.errors import ConfigError
from pptune.validation.metrics import accuracy, average_ranks, relative_errors, spearman


def test_average_ranks_share_ties() -> None:
    assert average_ranks([10.0, 30.0, 20.0, 20.0]) == [1.0, 4.0, 2.5, 2.5]


def test_spearman_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(3)
    for _ in range(20):
        n = rng.randint(3, 15)
        x = [float(rng.randint(0, 5)) for _ in range(n)]
        y = [float(rng.randint(0, 5)) for _ in range(n)]
        ours = spearman(x, y)
        theirs = stats.spearmanr(x, y).statistic
        assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs, abs=1e-12)


def test_spearman_extremes() -> None:
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ConfigError):
        spearman([1, 2], [1])


def test_relative_errors_sign() -> None:
    assert relative_errors([110.0, 90.0], [100.0, 100.0]) == pytest.approx([0.1, -0.1])


def test_accuracy_pick_gap_and_ranking_by_throughput() -> None:
    labels = ["a", "b", "c"]
    # "a" is predicted fastest but measures 10% slower than "b", the measured best.
    acc = accuracy(labels, predicted_ms=[90.0, 100.0, 200.0], measured_ms=[110.0, 100.0, 190.0],
                   samples_per_step=[16, 16, 16])
    assert acc.model_pick == "a" and acc.measured_best == "b" and not acc.pick_is_best
    assert acc.pick_gap == pytest.approx(110 / 100 - 1)
    assert acc.max_abs_error == pytest.approx(20 / 110) and acc.max_error_label == "a"
    assert acc.median_abs_error == pytest.approx(10 / 190)
    assert acc.spearman == pytest.approx(0.5)
    # Different global batches rank by samples per second, not by step time.
    acc = accuracy(["small", "big"], [50.0, 80.0], [50.0, 80.0], [8, 32])
    assert acc.model_pick == acc.measured_best == "big" and acc.pick_gap == 0.0


def test_accuracy_needs_aligned_inputs() -> None:
    with pytest.raises(ConfigError):
        accuracy([], [], [], [])
    with pytest.raises(ConfigError):
        accuracy(["a"], [1.0, 2.0], [1.0], [1])
