"""Fit a few physical constants of a cluster to the user's measured runs (``pptune calibrate --runs``, k-shot report).

Each run is a configuration dict of ``pptune estimate --batch`` (``pptune.batch_lines``) with its measured step time;
it is predicted exactly as ``pptune estimate`` predicts it, on the run's cluster with the candidate constants
applied. The constants, in the order a fit takes them up, each with bounds that keep it physical:

- ``compute_efficiency``: a multiple of the GPU's achieved compute (``gpu.matmul_efficiency`` and
  ``memory_efficiency`` of the analytic model, and ``1 / calibration.compute_scale`` for measured profiles): the
  cluster's kernels, clocks and software stack against the ones the preset was fitted on.
- ``inter_node_efficiency``: achieved over nominal inter-node bus bandwidth (``inter_node_gbps``): NCCL across
  nodes runs below line rate (nccl-tests bus bandwidth), and the NICs a rank shares.
- ``per_microbatch_overhead_ms``: the engine's work per micro-batch and model chunk outside the layers
  (``Cluster.per_microbatch_overhead_ms``; an absolute value that replaces the base cluster's).
- ``intra_node_efficiency``: the same for the links inside a node (``intra_node_gbps``).

Which constants a set of runs can identify is decided before fitting, from the sensitivity of the predictions to
each constant over its bounds (a constant no prediction depends on by ``MIN_EFFECT`` is kept fixed: no multi-node
run, no inter-node efficiency), from collinearity with the constants already taken (Gram-Schmidt on the scaled
sensitivities), and from the number of runs: a fit takes at most ``runs - 1`` constants (so that it is a least
squares fit with a residual, not an interpolation of its runs), and a single run only the first identifiable one.

How: bounded Levenberg-Marquardt on the relative errors (``predicted / measured - 1``; short and long steps count
alike) over ``MODEL_ERROR`` under a heavy-tailed Student t (``MODEL_ERROR_DOF``), plus each fitted constant's distance from its starting value over its
``PRIOR_WIDTH`` (a maximum a posteriori fit: few runs move the constants only as far as they have to), finite-difference Jacobian, numpy only (scipy is a dev extra; the single-node ``local_fit`` is likewise
scipy-free). ``leave_one_out`` refits without each run in turn and predicts it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pptune.batch_lines import build_item
from pptune.cost.cache import CostCache
from pptune.cost.estimate import estimate
from pptune.cost.types import Estimate
from pptune.errors import ConfigError
from pptune.hardware import Cluster
from pptune.profile.scale import compute_scale_of

CONSTANTS: tuple[str, ...] = ("compute_efficiency", "inter_node_efficiency", "per_microbatch_overhead_ms",
                              "intra_node_efficiency")
BOUNDS: dict[str, tuple[float, float]] = {
    "compute_efficiency": (0.5, 1.25),  # a preset at 86% of peak (A100 MAMF) may reach ~100%, not more
    "inter_node_efficiency": (0.2, 1.2),
    "per_microbatch_overhead_ms": (0.0, 20.0),
    "intra_node_efficiency": (0.2, 1.2),
}
LABELS = {"compute_efficiency": "compute efficiency", "inter_node_efficiency": "inter-node bus efficiency",
          "per_microbatch_overhead_ms": "per-micro-batch overhead", "intra_node_efficiency": "intra-node bus efficiency"}
# The fit is a maximum a posteriori one: each constant has a prior centred on its starting value (the preset's
# figure) with these widths, and each run's relative error counts with the model error below. Without them, three
# runs would move a bus efficiency to its bound to absorb the model's own per-run scatter (which then costs dearly
# on every other configuration); the widths say how far clusters of one GPU type plausibly differ: kernels and
# clocks by ~15%; NCCL's achieved bus bandwidth across nodes anywhere from under half of the NICs' line rate to
# most of it (nccl-tests figures), so inter-node efficiency is the least known; NVLink rings reach 70-90% of the
# datasheet figure; engine overheads by a few ms.
PRIOR_WIDTH: dict[str, float] = {"compute_efficiency": 0.15, "inter_node_efficiency": 0.5,
                                 "per_microbatch_overhead_ms": 2.0, "intra_node_efficiency": 0.3}
# The relative error one run's prediction has even with the right constants: the RMS held-out error of the
# fitted model on the given single-node A100 set (results/validation/published/predictions_random.csv, 720
# held-out rows: 8.7%), not a figure of any multi-node set.
MODEL_ERROR = 0.087
# ... and its tails: the same 720 errors have kurtosis 5.3 (a normal's is 3; 2.6% lie beyond 3 sd, not 0.3%), the
# kurtosis of a Student t with 7 degrees of freedom (3 + 6 / (dof - 4)). The fit's likelihood is that t, so one run
# the model gets badly wrong moves the constants far less than it would under least squares.
MODEL_ERROR_DOF = 7.0
MIN_EFFECT = 0.01  # a constant moved across its bounds must move some prediction by 1% to be identifiable
MIN_INDEPENDENCE = 0.1  # share of a constant's sensitivity not explained by the constants already taken
MIN_RUNS = 2  # pptune calibrate --runs: leave-one-out needs one run to fit and one to predict


@dataclass(frozen=True, kw_only=True, slots=True)
class Run:
    """One measured run: its configuration (batch-line keys, complete) and what was measured."""

    label: str
    item: dict[str, Any]  # the keys of pptune.batch_lines.BATCH_KEYS; item["cluster"] is the run's Cluster
    measured_step_ms: float
    measured_peak_memory_gib: float | None = None

    @property
    def cluster(self) -> Cluster:
        return self.item["cluster"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RunsFit:
    """A fit: the constants (fitted and fixed), which were fitted, why the others were not, and its errors."""

    values: dict[str, float]
    fitted: tuple[str, ...]
    fixed: dict[str, str]  # constant -> why it was kept at its starting value
    errors_before: tuple[float, ...]  # relative errors of the starting constants on the fitted runs
    errors_after: tuple[float, ...]  # and of the fitted ones (in-sample)
    evaluations: int

    def describe(self) -> str:
        """One line: the fitted constants, then the fixed ones with their reasons."""
        fitted = ", ".join(f"{LABELS[n]} {_show(n, self.values[n])}" for n in self.fitted)
        fixed = "; ".join(f"{LABELS[n]} kept at {_show(n, self.values[n])} ({why})" for n, why in self.fixed.items())
        return f"fitted {fitted}" + (f"; {fixed}" if fixed else "")


def _show(name: str, value: float) -> str:
    return f"{value:.2f} ms" if name.endswith("_ms") else f"x{value:.3f}"


def start_values(cluster: Cluster) -> dict[str, float]:
    """The constants that change nothing on ``cluster`` (multiples 1, its own per-micro-batch overhead)."""
    values = {name: 1.0 for name in CONSTANTS}
    values["per_microbatch_overhead_ms"] = min(cluster.per_microbatch_overhead_ms,
                                               BOUNDS["per_microbatch_overhead_ms"][1])
    return values


def apply_constants(cluster: Cluster, values: dict[str, float]) -> Cluster:
    """``cluster`` with the constants applied (what ``--cluster`` then loads from the written JSON)."""
    c = values["compute_efficiency"]
    gpu = dataclasses.replace(cluster.gpu, matmul_efficiency=cluster.gpu.matmul_efficiency * c,
                              memory_efficiency=cluster.gpu.memory_efficiency * c)
    scale = compute_scale_of(cluster.calibration, origin=f"cluster {cluster.name}") / c
    return cluster.replace(
        gpu=gpu, inter_node_gbps=cluster.inter_node_gbps * values["inter_node_efficiency"],
        intra_node_gbps=cluster.intra_node_gbps * values["intra_node_efficiency"],
        per_microbatch_overhead_ms=values["per_microbatch_overhead_ms"],
        calibration={**cluster.calibration, "compute_scale": scale},
    )


def predict_run(run: Run, values: dict[str, float] | None = None, *, cache: CostCache | None = None) -> Estimate:
    """The estimate of a run with the constants applied to its cluster (``pptune estimate``'s path).

    ``cache``: kept across the calls of a fit (the schedules of its runs do not change with the constants).
    """
    cluster = run.cluster if values is None else apply_constants(run.cluster, values)
    profile, sized, config = build_item({**run.item, "cluster": cluster})  # what pptune estimate builds
    return estimate(profile, sized, config, cache=cache)


def _errors(runs: Sequence[Run], values: dict[str, float] | None, cache: CostCache) -> np.ndarray:
    return np.array([predict_run(r, values, cache=cache).step_time_ms / r.measured_step_ms - 1.0 for r in runs])


def _span(name: str) -> float:
    lo, hi = BOUNDS[name]
    return hi - lo


def _select(runs: Sequence[Run], start: dict[str, float], candidates: Sequence[str],
            cache: CostCache) -> tuple[list[str], dict[str, str]]:
    """Which constants the runs identify (module docstring), in ``CONSTANTS`` order, and why the others are not."""
    base = _errors(runs, start, cache)
    columns: dict[str, np.ndarray] = {}
    for name in candidates:
        lo, hi = BOUNDS[name]
        step = 0.05 * _span(name)
        probe = start[name] + step if start[name] + step <= hi else start[name] - step
        moved = _errors(runs, {**start, name: probe}, cache)
        columns[name] = (moved - base) / (probe - start[name]) * _span(name)  # effect across the bounds
    limit = 1 if len(runs) == 1 else len(runs) - 1
    taken: list[str] = []
    basis: list[np.ndarray] = []
    why: dict[str, str] = {}
    multi_node = any(r.cluster.gpus_per_node < _world(r) for r in runs)
    for name in candidates:
        col = columns[name]
        if float(np.max(np.abs(col))) < MIN_EFFECT:
            hint = " (no run spans nodes)" if name == "inter_node_efficiency" and not multi_node else ""
            why[name] = f"no run's predicted time depends on it{hint}"
            continue
        rest = col.copy()
        for b in basis:
            rest = rest - float(rest @ b) * b
        if float(np.linalg.norm(rest)) < MIN_INDEPENDENCE * float(np.linalg.norm(col)):
            why[name] = f"these runs cannot separate it from {', '.join(LABELS[t] for t in taken)}"
            continue
        if len(taken) >= limit:
            why[name] = f"{len(runs)} run{'s' if len(runs) > 1 else ''} fit at most {limit} constant{'s' if limit > 1 else ''}"
            continue
        taken.append(name)
        basis.append(rest / float(np.linalg.norm(rest)))
    return taken, why


def _world(run: Run) -> int:
    return run.item["tp"] * (run.item.get("cp") or 1) * run.item["pp"] * run.item["dp"]


def fit_runs(runs: Sequence[Run], *, start: dict[str, float] | None = None, fixed: Iterable[str] = (),
             max_iterations: int = 40, cache: CostCache | None = None) -> RunsFit:
    """Fit the constants the runs identify (module docstring) by bounded least squares on relative errors.

    Args:
        runs: measured runs (one at least; the CLI asks for ``MIN_RUNS``).
        start: starting (and fixed) constants; default ``start_values`` of the first run's cluster.
        fixed: constants the caller keeps at their starting value.
        max_iterations: Levenberg-Marquardt iterations.
        cache: the cost model's cache for every estimate of the fit (one is made when not given).

    Raises:
        ConfigError: no runs, a non-positive measurement, or runs that identify none of the constants.
    """
    if not runs:
        raise ConfigError("calibration needs at least one measured run")
    bad = [r.label for r in runs if not (isinstance(r.measured_step_ms, float | int) and r.measured_step_ms > 0
                                         and math.isfinite(r.measured_step_ms))]
    if bad:
        raise ConfigError(f"measured step times must be positive: {', '.join(bad)}")
    values = dict(start or start_values(runs[0].cluster))
    held = set(fixed)
    candidates = [n for n in CONSTANTS if n not in held]
    cache = CostCache() if cache is None else cache
    free, why = _select(runs, values, candidates, cache)
    why.update({n: "kept fixed by the caller" for n in CONSTANTS if n in held})
    before = _errors(runs, values, cache)
    if not free:
        reasons = "; ".join(f"{LABELS[n]}: {w}" for n, w in why.items())
        raise ConfigError(f"the runs identify none of the constants ({reasons})")
    x, after, evaluations = _levenberg_marquardt(runs, values, free, before, max_iterations, cache)
    values.update(dict(zip(free, x.tolist(), strict=True)))
    return RunsFit(values=values, fitted=tuple(free), fixed={n: why[n] for n in CONSTANTS if n in why},
                   errors_before=tuple(before.tolist()), errors_after=tuple(after.tolist()), evaluations=evaluations)


def _robust(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Student-t residuals of relative errors ``e`` and their derivatives by ``e``.

    ``r = sign(z) sqrt(rho(z))`` with ``rho(z) = (dof + 1) log(1 + z^2 / dof)`` (the t's negative log-likelihood,
    times 2) and ``z = e / s``, ``s`` the scale whose t has standard deviation ``MODEL_ERROR``; so ``sum(r^2)`` is
    what least squares minimises; near 0 the residual is ``e / MODEL_ERROR`` times sqrt((dof + 1) / (dof - 2)) = 1.26.
    """
    dof = MODEL_ERROR_DOF
    scale = MODEL_ERROR * math.sqrt((dof - 2) / dof)
    z = e / scale
    rho = (dof + 1) * np.log1p(z * z / dof)
    r = np.sign(z) * np.sqrt(rho)
    slope0 = math.sqrt((dof + 1) / dof)  # dr/dz at z = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        dr_dz = np.where(np.abs(r) > 1e-9, (dof + 1) * z / (dof + z * z) / np.where(r == 0, 1, r), slope0)
    return r, dr_dz / scale


def _levenberg_marquardt(runs: Sequence[Run], values: dict[str, float], free: Sequence[str], r0: np.ndarray,
                         max_iterations: int, cache: CostCache) -> tuple[np.ndarray, np.ndarray, int]:
    """Bounded LM on the MAP objective (module docstring) in coordinates scaled by each constant's span.

    Returns the fitted free constants, the runs' relative errors with them, and the number of evaluations.
    """
    lo = np.array([BOUNDS[n][0] for n in free])
    hi = np.array([BOUNDS[n][1] for n in free])
    span = hi - lo
    x0 = np.clip(np.array([values[n] for n in free]), lo, hi)
    width = np.array([PRIOR_WIDTH[n] for n in free])
    evaluations = 0

    def errors(v: np.ndarray) -> np.ndarray:
        nonlocal evaluations
        evaluations += 1
        return _errors(runs, {**values, **dict(zip(free, v.tolist(), strict=True))}, cache)

    def total(e: np.ndarray, v: np.ndarray) -> np.ndarray:  # the whitened residuals: runs, then priors
        return np.concatenate([_robust(e)[0], (v - x0) / width])

    x = x0
    e = errors(x) if not np.allclose(x0, [values[n] for n in free]) else r0
    r = total(e, x)
    cost, damping = float(r @ r), 1e-3
    prior_rows = np.diag(span / width)
    for _ in range(max_iterations):
        jac = np.empty((len(e), len(free)))
        for j in range(len(free)):
            h = 1e-3 * span[j]
            v = x.copy()
            v[j] = x[j] + h if x[j] + h <= hi[j] else x[j] - h
            jac[:, j] = (errors(v) - e) / (v[j] - x[j]) * span[j]
        jac = jac * _robust(e)[1][:, None]  # chain rule through the Student-t residual
        jac = np.vstack([jac, prior_rows])
        a, g = jac.T @ jac, jac.T @ r
        improved = False
        while damping < 1e8:
            step = np.linalg.solve(a + damping * (np.diag(np.diag(a)) + 1e-12 * np.eye(len(free))), -g)
            trial = np.clip(x + step * span, lo, hi)
            if np.allclose(trial, x, rtol=0, atol=1e-9):
                break
            et = errors(trial)
            rt = total(et, trial)
            ct = float(rt @ rt)
            if ct < cost:
                improved = cost - ct > 1e-10 * max(cost, 1e-12)
                x, e, r, cost, damping = trial, et, rt, ct, max(damping / 3, 1e-9)
                break
            damping *= 4
        if not improved:
            break
    return x, e, evaluations


def leave_one_out(runs: Sequence[Run], **fit_options: Any) -> list[float | None]:
    """For each run, the relative error of a fit to all the other runs (held-out errors).

    A run whose other runs identify none of the constants gets None.

    Raises:
        ConfigError: fewer than ``MIN_RUNS`` runs.
    """
    if len(runs) < MIN_RUNS:
        raise ConfigError(f"leave-one-out needs at least {MIN_RUNS} runs, got {len(runs)}")
    cache = fit_options.pop("cache", None) or CostCache()
    out: list[float | None] = []
    for i, run in enumerate(runs):
        try:
            fit = fit_runs([r for j, r in enumerate(runs) if j != i], cache=cache, **fit_options)
        except ConfigError:
            out.append(None)
            continue
        out.append(predict_run(run, fit.values, cache=cache).step_time_ms / run.measured_step_ms - 1.0)
    return out
