"""Evaluator: the cost model behind the search, with one profile per tp degree and one estimate per config cached.

The cost model is pure and deterministic, so a configuration the sampler proposes twice costs a dict
lookup the second time, and a resumed study can rebuild its ranking by re-evaluating stored configs. The
evaluator owns the cost model's CostCache (layer tables, splits, compiled schedules, per-stage terms), which
serves every estimate and estimate_many call it makes.
``evaluate_many`` (the exhaustive search) evaluates a whole space at once with ``pptune.cost.bulk``: those
evaluations hold an EstimateSummary (no per-stage detail); calling the evaluator on such a configuration
replaces it with the full Estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pptune.cost.cache import CostCache
from pptune.cost.types import Estimate, EstimateSummary
from pptune.errors import PptuneError
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile

EstimateFn = Callable[[Profile, Cluster, ParallelConfig], Estimate]
ProfileFn = Callable[[int], Profile]


@dataclass
class Evaluation:
    """The outcome for one configuration: an estimate, or the cost model's reason for rejecting it."""

    config: ParallelConfig
    estimate: Estimate | EstimateSummary | None  # a summary when it came from evaluate_many
    error: str | None = None

    @property
    def feasible(self) -> bool:
        return self.estimate is not None and self.estimate.feasible


@dataclass
class Evaluator:
    """Evaluate configurations with a cache.

    Args:
        profile_for_tp: returns the profile the cost model needs at a tp degree (called once per tp).
        cluster: the hardware.
        estimate_fn: ``estimate(profile, cluster, config)``; defaults to pptune.cost.estimate.estimate.
    """

    profile_for_tp: ProfileFn
    cluster: Cluster
    estimate_fn: EstimateFn | None = None
    _profiles: dict[int, Profile] = field(default_factory=dict)
    _cache: dict[ParallelConfig, Evaluation] = field(default_factory=dict)
    cost_cache: CostCache = field(default_factory=CostCache)
    calls: int = 0

    def profile(self, tp: int) -> Profile:
        if tp not in self._profiles:
            self._profiles[tp] = self.profile_for_tp(tp)
        return self._profiles[tp]

    def __call__(self, config: ParallelConfig) -> Evaluation:
        self.calls += 1
        hit = self._cache.get(config)
        if hit is not None and not isinstance(hit.estimate, EstimateSummary):
            return hit
        try:
            if self.estimate_fn is None:
                from pptune.cost.estimate import estimate

                got = estimate(self.profile(config.tp), self.cluster, config, cache=self.cost_cache)
            else:
                got = self.estimate_fn(self.profile(config.tp), self.cluster, config)
            result = Evaluation(config=config, estimate=got)
        except PptuneError as exc:  # the cost model's own validity rules (e.g. a type: regex matching nothing)
            result = Evaluation(config=config, estimate=None, error=str(exc))
        self._cache[config] = result
        return result

    def evaluate_many(self, configs: Iterable[ParallelConfig]) -> list[Evaluation]:
        """Evaluate many configurations at once (bulk cost model; with ``estimate_fn`` one by one).

        New evaluations hold an EstimateSummary: the same figures as the Estimate without per-stage detail.
        """
        configs = list(configs)
        if self.estimate_fn is not None:
            return [self(c) for c in configs]
        from pptune.cost.bulk import estimate_many

        todo = [c for c in dict.fromkeys(configs) if c not in self._cache]
        by_tp: dict[int, list[ParallelConfig]] = {}
        for c in todo:
            by_tp.setdefault(c.tp, []).append(c)
        done: dict[ParallelConfig, Evaluation] = {}
        profiles = {}
        for tp, group in by_tp.items():
            try:
                profiles[tp] = self.profile(tp)
            except PptuneError as exc:  # no profile at this tp
                done.update((c, Evaluation(config=c, estimate=None, error=str(exc))) for c in group)
        ready = [c for c in todo if c.tp in profiles]
        for c, got in zip(ready, estimate_many(profiles, self.cluster, ready, cache=self.cost_cache), strict=True):  # one pooled call
            done[c] = (Evaluation(config=c, estimate=None, error=str(got)) if isinstance(got, PptuneError)
                       else Evaluation(config=c, estimate=got))
        for c in todo:  # first-evaluation order
            self._cache[c] = done[c]
        self.calls += len(configs)
        return [self._cache[c] for c in configs]

    @property
    def evaluated(self) -> list[Evaluation]:
        """Every distinct configuration evaluated so far, in first-evaluation order."""
        return list(self._cache.values())


def memory_violation_gib(evaluation: Evaluation, limit_bytes: int) -> float:
    """Optuna's constraint value: > 0 violates (peak memory above the GPU's, in GiB), <= 0 satisfies."""
    est = evaluation.estimate
    if est is None:
        return 1e3  # rejected by the cost model: far outside the feasible region
    over = (est.peak_memory_bytes - limit_bytes) / 2**30
    if est.feasible:
        return min(over, 0.0)  # the cost model's verdict wins over our reading of its limit
    return over if over > 0 else 1e-3  # infeasible for another reason: just outside
