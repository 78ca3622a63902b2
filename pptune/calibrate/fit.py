"""Fit the model constants to published rows (least squares on relative errors) and split rows fit/held-out.

Two splits, both reported by ``pptune validate --published``:

- ``random``: a seeded 50/50 shuffle (interpolation: the held-out rows lie among fitted ones).
- ``structural``: every 4-stage pipeline and every run of the largest model (h 2048, 24 layers) are held
  out, so the fitted constants must extrapolate to a deeper pipeline and a bigger model than any they saw.

The fit needs scipy (``pip install pptune[dev]``); evaluating committed constants does not.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from pptune.calibrate.constants import BOUNDS, FITTED, Constants
from pptune.calibrate.predict import predict_rows, relative_errors
from pptune.calibrate.published import PublishedRow
from pptune.cost.cache import CostCache
from pptune.errors import PptuneError
from pptune.hardware import Cluster

SPLITS = ("random", "structural")
RANDOM_SEED = 20240607
# Where the fit starts: mid-range values of the physical constants (not results of an earlier fit).
START = Constants(matmul_half_flops=1e9, memory_efficiency=0.7, launch_overhead_us=20.0, nvlink_latency_us=5.0,
                  per_microbatch_overhead_ms=1.0)


def held_out(rows: Sequence[PublishedRow], split: str) -> list[bool]:
    """Which rows the split holds out (True) from the fit."""
    if split == "random":
        order = list(range(len(rows)))
        random.Random(RANDOM_SEED).shuffle(order)
        out = [False] * len(rows)
        for i in order[: len(rows) // 2]:
            out[i] = True
        return out
    if split == "structural":
        return [r.pp == 4 or (r.hidden == 2048 and r.layers == 24) for r in rows]
    raise PptuneError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


@dataclass(frozen=True, kw_only=True, slots=True)
class FitResult:
    """Fitted constants and how the optimiser ended."""

    constants: Constants
    rms_relative_error: float
    evaluations: int
    message: str


def fit_constants(rows: Sequence[PublishedRow], base: Cluster, *, start: Constants = START,
                  max_evaluations: int = 200) -> FitResult:
    """Least-squares fit of ``FITTED`` constants to ``rows`` (relative errors, bounded to plausible ranges).

    Raises:
        PptuneError: scipy is not installed, or no rows to fit.
    """
    if not rows:
        raise PptuneError("no rows to fit")
    try:
        from scipy.optimize import least_squares
    except ImportError:  # scipy is a dev extra, not a runtime dependency
        raise PptuneError("fitting needs scipy: pip install 'pptune[dev]' (evaluating constants does not)") from None
    lower = [BOUNDS[n][0] for n in FITTED]
    upper = [BOUNDS[n][1] for n in FITTED]
    x0 = [min(max(v, lo), hi) for v, lo, hi in zip(start.fitted_vector(), lower, upper, strict=True)]
    scale = [max(abs(v), 1e-3) for v in x0]
    calls = 0
    cache = CostCache()  # one for every evaluation of the fit: the rows' shapes repeat

    def residuals(x: Sequence[float]) -> list[float]:
        nonlocal calls
        calls += 1
        return relative_errors(predict_rows(rows, base, start.with_fitted(list(x)), cache=cache), rows)

    result = least_squares(residuals, x0, bounds=(lower, upper), x_scale=scale, diff_step=1e-3,
                           max_nfev=max_evaluations)
    fitted = start.with_fitted(list(result.x))
    rms = (sum(r * r for r in result.fun) / len(result.fun)) ** 0.5
    return FitResult(constants=fitted, rms_relative_error=rms, evaluations=calls, message=str(result.message))
