"""k-shot calibration on the published multi-node sets: fit k runs of a set, predict the others.

For each set (one cluster and software stack: vTrain's multi-node runs, Korthikanti et al., SC'21 Table 1, MT-NLG,
BLOOM) and each k, ``draws`` random choices of k runs (a fixed seed) are fitted with ``runs_fit.fit_runs`` (the fit
of ``pptune calibrate --runs``) and every other run of the set is predicted with the fitted constants. k = 0 is the
zero-shot prediction (nothing fitted). Each run goes through ``pptune.batch_lines`` as a ``calibrate --runs`` line
would: the published configuration on the ``a100-80g`` preset with the source's inter-node bandwidth.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from pptune.calibrate.published_runs import PublishedRun, batch_item
from pptune.calibrate.runs_fit import Run, fit_runs, predict_run
from pptune.cost.cache import CostCache
from pptune.hardware import load_cluster
from pptune.validation.metrics import spearman

CLUSTER = "a100-80g"
KS = (0, 1, 3, 5)
DRAWS = 10
SEED = 20261203


def published_run(run: PublishedRun, cluster: str = CLUSTER) -> Run:
    """A published run as a ``calibrate --runs`` line: ``published_runs.batch_item`` (the line ``multinode.md``
    estimates: unfused attention, the run's gradient-reduce overlap, the source's inter-node bandwidth) and its
    measured step time."""
    where = f"tp{run.tp} pp{run.pp}{f' v{run.vpp}' if run.vpp > 1 else ''} dp{run.dp} mbs{run.micro_batch}"
    return Run(label=f"{run.source} {run.name} {where} gbs{run.global_batch}",
               item=batch_item(run, load_cluster(cluster)), measured_step_ms=run.measured_s * 1e3)


def group_key(run: Run) -> tuple:
    """Runs of one job (model, GPU count, global batch) whose configurations differ: what a planner ranks."""
    i = run.item
    return i["model"], i["tp"] * i["pp"] * i["dp"], i["global_batch_size"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Scores:
    """Held-out errors of one draw (or their average over draws)."""

    count: int
    mean_abs: float
    median_abs: float
    max_abs: float
    signed_mean: float
    spearman: float  # mean within-group rank correlation of predicted and measured step time (NaN: no group)

    @staticmethod
    def average(scores: Sequence[Scores]) -> Scores:
        def mean(name: str) -> float:
            vals = [getattr(s, name) for s in scores if not math.isnan(getattr(s, name))]
            return statistics.fmean(vals) if vals else math.nan

        return Scores(count=round(statistics.fmean(s.count for s in scores)), mean_abs=mean("mean_abs"),
                      median_abs=mean("median_abs"), max_abs=mean("max_abs"), signed_mean=mean("signed_mean"),
                      spearman=mean("spearman"))


def score(runs: Sequence[Run], predicted_ms: Sequence[float]) -> Scores:
    """Error statistics of predictions of ``runs``; Spearman within each group of >= 3 runs, averaged."""
    errors = [p / r.measured_step_ms - 1.0 for p, r in zip(predicted_ms, runs, strict=True)]
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(group_key(r), []).append(i)
    rhos = [spearman([predicted_ms[i] for i in idx], [runs[i].measured_step_ms for i in idx])
            for idx in groups.values() if len(idx) >= 3]
    rhos = [x for x in rhos if not math.isnan(x)]
    absolute = [abs(e) for e in errors]
    return Scores(count=len(errors), mean_abs=statistics.fmean(absolute), median_abs=statistics.median(absolute),
                  max_abs=max(absolute), signed_mean=statistics.fmean(errors),
                  spearman=statistics.fmean(rhos) if rhos else math.nan)


@dataclass(frozen=True, kw_only=True, slots=True)
class KShotResult:
    """One set at one k: the averaged held-out scores, the draws made, and the constants each draw fitted."""

    source: str
    k: int
    draws: int
    scores: Scores | None  # None: fewer than k + 1 runs in the set
    fitted: tuple[str, ...]  # one line per draw: what was fitted, what kept fixed


def kshot(source: str, runs: Sequence[Run], k: int, *, draws: int = DRAWS, seed: int = SEED,
          zero_shot_ms: Sequence[float] | None = None) -> KShotResult:
    """Fit ``draws`` random sets of ``k`` runs and score the predictions of the rest (k = 0: zero-shot).

    Args:
        zero_shot_ms: the runs' uncalibrated predictions, when already computed (k = 0 and held-out reuse).
    """
    cache = CostCache()  # one for every estimate of the set: its runs' schedules repeat across draws
    base = list(zero_shot_ms) if zero_shot_ms is not None else [predict_run(r, cache=cache).step_time_ms for r in runs]
    if k == 0:
        return KShotResult(source=source, k=0, draws=1, scores=score(runs, base), fitted=())
    if len(runs) <= k:
        return KShotResult(source=source, k=k, draws=0, scores=None, fitted=())
    rng = random.Random(f"{seed}:{source}:{k}")
    results, notes = [], []
    for _ in range(draws):
        chosen = sorted(rng.sample(range(len(runs)), k))
        result = fit_runs([runs[i] for i in chosen], cache=cache)
        rest = [i for i in range(len(runs)) if i not in set(chosen)]
        predicted = [predict_run(runs[i], result.values, cache=cache).step_time_ms for i in rest]
        results.append(score([runs[i] for i in rest], predicted))
        notes.append(result.describe())
    return KShotResult(source=source, k=k, draws=draws, scores=Scores.average(results), fitted=tuple(notes))
