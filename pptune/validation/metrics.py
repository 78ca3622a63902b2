"""Prediction-quality figures: relative errors, Spearman rank correlation, and whether the model's pick was the fastest.

Pure functions over plain sequences (no torch, no pandas), so they are cheap to test against scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from pptune.errors import ConfigError


def relative_errors(predicted: Sequence[float], measured: Sequence[float]) -> list[float]:
    """(predicted - measured) / measured for each pair."""
    if len(predicted) != len(measured):
        raise ConfigError(f"{len(predicted)} predictions for {len(measured)} measurements")
    return [(p - m) / m for p, m in zip(predicted, measured, strict=True)]


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n (ties share the mean of the ranks they span), as scipy.stats.rankdata(method='average')."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (NaN when a side is constant)."""
    if len(x) != len(y):
        raise ConfigError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


@dataclass(frozen=True, kw_only=True, slots=True)
class Accuracy:
    """How well predictions matched measurements over a set of configurations."""

    count: int
    median_abs_error: float
    mean_abs_error: float
    max_abs_error: float
    max_error_label: str
    spearman: float  # rank correlation of predicted vs measured throughput
    model_pick: str  # the configuration with the highest predicted throughput
    measured_best: str  # the one with the highest measured throughput
    pick_gap: float  # measured best throughput / the pick's measured throughput - 1 (0 when the pick is the best)

    @property
    def pick_is_best(self) -> bool:
        return self.model_pick == self.measured_best


def accuracy(labels: Sequence[str], predicted_ms: Sequence[float], measured_ms: Sequence[float],
             samples_per_step: Sequence[int]) -> Accuracy:
    """Error and ranking figures of step-time predictions.

    Throughput (samples per second) ranks the configurations, so configurations with different global batches
    compare fairly; with one global batch it ranks them exactly as step time does.

    Raises:
        ConfigError: no configuration, or sequences of different lengths.
    """
    n = len(labels)
    if n == 0 or not (len(predicted_ms) == len(measured_ms) == len(samples_per_step) == n):
        raise ConfigError(f"accuracy needs one prediction, measurement and batch per label, got {n} labels, "
                          f"{len(predicted_ms)}, {len(measured_ms)}, {len(samples_per_step)}")
    errors = [abs(e) for e in relative_errors(predicted_ms, measured_ms)]
    pred_tput = [g / p for g, p in zip(samples_per_step, predicted_ms, strict=True)]
    meas_tput = [g / m for g, m in zip(samples_per_step, measured_ms, strict=True)]
    pick = max(range(n), key=lambda i: (pred_tput[i], -i))  # first listed wins a tie
    best = max(range(n), key=lambda i: (meas_tput[i], -i))
    worst = max(range(n), key=errors.__getitem__)
    return Accuracy(
        count=n, median_abs_error=statistics.median(errors), mean_abs_error=statistics.fmean(errors),
        max_abs_error=errors[worst], max_error_label=labels[worst], spearman=spearman(pred_tput, meas_tput),
        model_pick=labels[pick], measured_best=labels[best], pick_gap=meas_tput[best] / meas_tput[pick] - 1.0,
    )
