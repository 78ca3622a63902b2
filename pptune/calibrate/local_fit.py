"""Fit the cost model's free constants to real runs of this machine (``pptune calibrate``, ``validate --local``).

The constants, each with a physical meaning:

- ``compute_scale``: real layer time / profiled layer time. The profiler times one layer at a time in one
  process; in a run, ranks share the machine's caches and memory bandwidth (on this host two ranks share two
  cores), so layers can run slower (or, warmed up in a steady loop, faster) than profiled.
- ``per_microbatch_overhead_ms``: engine work per micro-batch and stage outside the layers (instruction
  dispatch, data loading, p2p bookkeeping) -> ``Cluster.per_microbatch_overhead_ms``.
- ``per_step_overhead_ms``: fixed work per optimizer step (barriers, the global gradient norm, the schedule
  set-up) -> ``Cluster.per_step_overhead_ms``.
- link ``latency_us`` and ``gbps`` (Hockney alpha-beta): searched on a small grid of multiples of the base
  cluster's (probed) figures, because step times identify them only weakly.

How: for each link candidate, ``compute_scale`` is found by golden-section search and, for each scale, the two
overheads by non-negative least squares (they enter the prediction linearly: ``a * m * vpp + b``). The
objective is the sum of squared relative errors, so short and long steps count alike. No scipy needed.

Held-out error: ``leave_one_out`` refits without each sample in turn and predicts it, so every reported
calibrated error is on a run the fit did not see.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pptune.cost.cache import CostCache
from pptune.cost.estimate import estimate
from pptune.cost.rows import overhead_units
from pptune.errors import ConfigError
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.scale import compute_scale_of, scaled_profile
from pptune.profile.schema import Profile

SCALE_BOUNDS = (0.5, 2.0)
SCALE_TOLERANCE = 2e-4  # of the compute scale: far below run-to-run noise
BRACKET = 0.15  # first search +- this around the starting scale
LINK_MULTIPLES = (0.5, 1.0, 2.0)  # tried for latency, then bandwidth, when fitting links
LINK_GAIN = 0.01  # relative objective gain a non-probed link figure must bring


@dataclass(frozen=True, kw_only=True, slots=True)
class Sample:
    """One measured run: what ran (profile + configuration) and its measured step time."""

    label: str
    profile: Profile
    config: ParallelConfig
    measured_ms: float


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalConstants:
    """The fitted constants (module docstring); the defaults change nothing."""

    compute_scale: float = 1.0
    per_microbatch_overhead_ms: float = 0.0
    per_step_overhead_ms: float = 0.0
    latency_multiple: float = 1.0  # of the base cluster's link latency
    bandwidth_multiple: float = 1.0  # of the base cluster's link bandwidth

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalFit:
    """A fit: the constants, the calibrated cluster, and the errors on the samples it was fitted to."""

    constants: LocalConstants
    cluster: Cluster
    labels: tuple[str, ...]
    errors_before: tuple[float, ...]  # relative errors of the base cluster on the fitted samples
    errors_after: tuple[float, ...]  # and of the calibrated one (in-sample)


def calibrated_cluster(base: Cluster, constants: LocalConstants, *, provenance: dict[str, Any] | None = None) -> Cluster:
    """``base`` with the fitted overheads, links and (in ``calibration``) the compute scale."""
    calibration = {**base.calibration, "compute_scale": constants.compute_scale,
                   "local_fit": {**constants.to_dict(), **(provenance or {})}}
    return base.replace(
        per_microbatch_overhead_ms=constants.per_microbatch_overhead_ms,
        per_step_overhead_ms=constants.per_step_overhead_ms,
        intra_node_latency_us=base.intra_node_latency_us * constants.latency_multiple,
        inter_node_latency_us=base.inter_node_latency_us * constants.latency_multiple,
        intra_node_collective_latency_us=_scaled(base.intra_node_collective_latency_us, constants.latency_multiple),
        inter_node_collective_latency_us=_scaled(base.inter_node_collective_latency_us, constants.latency_multiple),
        intra_node_gbps=base.intra_node_gbps * constants.bandwidth_multiple,
        inter_node_gbps=base.inter_node_gbps * constants.bandwidth_multiple,
        calibration=calibration,
    )


def _scaled(latency_us: float | None, multiple: float) -> float | None:
    return None if latency_us is None else latency_us * multiple


def cluster_compute_scale(cluster: Cluster) -> float:
    """The compute scale a calibrated cluster carries (1.0 when uncalibrated)."""
    return compute_scale_of(cluster.calibration, origin=f"cluster {cluster.name}")


class _Predictor:
    """Estimates with scaled profiles and re-linked clusters, cached (the fit asks for the same ones often)."""

    def __init__(self, base: Cluster) -> None:
        self.base = base.replace(per_microbatch_overhead_ms=0.0, per_step_overhead_ms=0.0)
        self._clusters: dict[tuple[float, float], Cluster] = {}
        self.cache = CostCache()

    def _cluster(self, lat: float, bw: float) -> Cluster:
        if (lat, bw) not in self._clusters:
            self._clusters[(lat, bw)] = calibrated_cluster(self.base, LocalConstants(latency_multiple=lat,
                                                                                     bandwidth_multiple=bw))
        return self._clusters[(lat, bw)]

    def bare_ms(self, sample: Sample, scale: float, lat: float, bw: float) -> float:
        """Predicted step time without the two overheads."""
        return estimate(scaled_profile(sample.profile, scale), self._cluster(lat, bw), sample.config,
                        cache=self.cache).step_time_ms




def _nnls_overheads(bare: Sequence[float], samples: Sequence[Sample]) -> tuple[float, float, float]:
    """Non-negative (a, b) minimising sum(((bare + a m + b) - meas) / meas)^2; returns (a, b, objective)."""
    rows = [(overhead_units(s.config) / s.measured_ms, 1.0 / s.measured_ms, (s.measured_ms - p) / s.measured_ms)
            for p, s in zip(bare, samples, strict=True)]

    def cost(a: float, b: float) -> float:
        return sum((x * a + y * b - t) ** 2 for x, y, t in rows)

    sxx = sum(x * x for x, _, _ in rows)
    syy = sum(y * y for _, y, _ in rows)
    sxy = sum(x * y for x, y, _ in rows)
    sxt = sum(x * t for x, _, t in rows)
    syt = sum(y * t for _, y, t in rows)
    candidates = [(0.0, 0.0)]
    det = sxx * syy - sxy * sxy
    if det > 1e-12 * sxx * syy:
        candidates.append(((sxt * syy - syt * sxy) / det, (syt * sxx - sxt * sxy) / det))
    if sxx > 0:
        candidates.append((sxt / sxx, 0.0))
    if syy > 0:
        candidates.append((0.0, syt / syy))
    a, b = min(((a, b) for a, b in candidates if a >= 0 and b >= 0), key=lambda ab: cost(*ab))
    return a, b, cost(a, b)


Fit = tuple[float, float, float, float]  # (scale, a, b, objective)


def _golden(f: Callable[[float], Fit], lo: float, hi: float) -> Fit:
    """Golden-section search of f's objective (last element) on [lo, hi]."""
    ratio = (math.sqrt(5) - 1) / 2
    x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    f1, f2 = f(x1), f(x2)
    while hi - lo > SCALE_TOLERANCE:
        if f1[3] <= f2[3]:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - ratio * (hi - lo)
            f1 = f(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + ratio * (hi - lo)
            f2 = f(x2)
    return f1 if f1[3] <= f2[3] else f2


def _best_scale(pred: _Predictor, samples: Sequence[Sample], lat: float, bw: float, *, fit_scale: bool,
                center: float) -> Fit:
    """The best (scale, a, b, objective) for one link candidate.

    Golden-section search in a bracket of +-``BRACKET`` around ``center``, widened to ``SCALE_BOUNDS`` when the
    optimum lands on its edge (the objective is unimodal in the scale in practice: a larger scale lengthens
    every compute path).
    """

    def objective(scale: float) -> Fit:
        bare = [pred.bare_ms(s, scale, lat, bw) for s in samples]
        return (scale, *_nnls_overheads(bare, samples))

    if not fit_scale:
        return objective(1.0)
    lo, hi = max(SCALE_BOUNDS[0], center - BRACKET), min(SCALE_BOUNDS[1], center + BRACKET)
    best = _golden(objective, lo, hi)
    if (best[0] - lo < 2 * SCALE_TOLERANCE and lo > SCALE_BOUNDS[0]) or \
            (hi - best[0] < 2 * SCALE_TOLERANCE and hi < SCALE_BOUNDS[1]):
        best = _golden(objective, *SCALE_BOUNDS)
    return best


def fit_local(samples: Sequence[Sample], base: Cluster, *, fit_scale: bool = True, fit_links: bool = True,
              provenance: dict[str, Any] | None = None, center: float = 1.0) -> LocalFit:
    """Fit the constants to ``samples`` and return them with the calibrated cluster.

    Links are searched latency first (x0.5, x1, x2 of the base cluster's at its bandwidth), then bandwidth at the
    best latency; a multiple other than 1 must lower the objective by ``LINK_GAIN`` to replace the probed figure.

    Args:
        samples: measured runs (at least 2; more than the fitted constants for a meaningful fit).
        base: the cluster the runs were predicted with (its overheads are ignored: they are refitted).
        fit_scale: fit ``compute_scale`` (else 1).
        fit_links: search link latency and bandwidth multiples (else keep the base cluster's).
        provenance: extra keys recorded under ``calibration.local_fit`` (command, date, samples).
        center: where the compute-scale search starts (a hint only: it widens when the optimum lies outside).

    Raises:
        ConfigError: fewer than 2 samples or a non-positive measurement.
    """
    if len(samples) < 2:
        raise ConfigError(f"calibration needs at least 2 measured runs, got {len(samples)}")
    bad = [s.label for s in samples if not s.measured_ms > 0]
    if bad:
        raise ConfigError(f"measured step times must be positive: {', '.join(bad)}")
    pred = _Predictor(base)
    lat = bw = 1.0
    best = _best_scale(pred, samples, lat, bw, fit_scale=fit_scale, center=center)
    if fit_links:
        for which in ("latency", "bandwidth"):
            for multiple in LINK_MULTIPLES:
                cand_lat, cand_bw = (multiple, bw) if which == "latency" else (lat, multiple)
                if (cand_lat, cand_bw) == (lat, bw):
                    continue
                got = _best_scale(pred, samples, cand_lat, cand_bw, fit_scale=fit_scale, center=best[0])
                if got[3] < best[3] * (1 - LINK_GAIN):
                    best, lat, bw = got, cand_lat, cand_bw
    scale, a, b, _ = best
    constants = LocalConstants(compute_scale=scale, per_microbatch_overhead_ms=a, per_step_overhead_ms=b,
                               latency_multiple=lat, bandwidth_multiple=bw)
    cluster = calibrated_cluster(base, constants, provenance={**(provenance or {}),
                                                              "fitted_on": [s.label for s in samples]})
    return LocalFit(constants=constants, cluster=cluster, labels=tuple(s.label for s in samples),
                    errors_before=tuple(_errors(samples, base, 1.0)),
                    errors_after=tuple(_errors(samples, cluster, scale)))


def predict_ms(sample: Sample, cluster: Cluster, scale: float | None = None) -> float:
    """The step time ``cluster`` (calibrated or not) predicts for a sample's configuration."""
    k = cluster_compute_scale(cluster) if scale is None else scale
    return estimate(scaled_profile(sample.profile, k), cluster, sample.config).step_time_ms


def _errors(samples: Sequence[Sample], cluster: Cluster, scale: float) -> list[float]:
    return [(predict_ms(s, cluster, scale) - s.measured_ms) / s.measured_ms for s in samples]


def leave_one_out(samples: Sequence[Sample], base: Cluster, **fit_options: Any) -> list[float]:
    """For each sample, the step time predicted by a fit to all the other samples (held-out predictions).

    Raises:
        ConfigError: fewer than 3 samples (each fit needs 2).
    """
    if len(samples) < 3:
        raise ConfigError(f"leave-one-out needs at least 3 measured runs, got {len(samples)}")
    out = []
    for i, sample in enumerate(samples):
        fit = fit_local([s for j, s in enumerate(samples) if j != i], base, **fit_options)
        out.append(predict_ms(sample, fit.cluster))
    return out
