"""plan(): search the parallel configurations of a model on a cluster and rank them by predicted throughput.

TPE (one objective: tokens/s) or NSGA-II (``pareto``: tokens/s up, peak memory down) over the SearchSpace,
or ``exhaustive`` evaluation of every point (the reference the samplers' regret is measured against).
The result holds the best feasible configuration, its estimate and the full ranking.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pptune.cost.types import Estimate
from pptune.errors import ConfigError, InfeasibleError
from pptune.hardware import Cluster, load_cluster
from pptune.model_source import ModelSource, resolve_model
from pptune.parallel import ParallelConfig
from pptune.planner.evaluator import EstimateFn, Evaluation, Evaluator
from pptune.planner.ranking import config_label, mark_pareto, ranking_frame, ranking_row
from pptune.planner.space import Fixed, SearchSpace, build_space
from pptune.planner.study import (
    OBJECTIVES,
    anchor_params,
    close_storage,
    completed_trials,
    config_from_attrs,
    job_identity,
    make_objective,
    open_storage,
    open_study,
    redact_url,
    run_study,
    study_name_for,
)
from pptune.profile.schema import Profile

GIB = 2**30


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanSettings:
    """How ``plan`` searches (the problem itself, model, cluster, GPUs and global batch, are its arguments).

    Attributes:
        trials: total Optuna trials (a resumed study runs only the missing ones).
        seed: sampler seed; the same seed and inputs give the same result.
        objective: ``throughput`` (TPE) or ``pareto`` (NSGA-II on tokens/s and peak memory).
        exhaustive: evaluate the whole space without Optuna.
        storage: an Optuna RDB URL (``sqlite:///path.db``); None keeps the study in memory.
        study_name: overrides the derived study name.
        resume: continue a stored study of the same name (finished trials are kept).
        replace_study: delete an existing study of the same name instead of failing (used for the plan
            directory's own storage, which a fresh run replaces anyway).
        target: ``deepspeed`` or ``megatron``.
        dtype: training precision.
        fixed: pinned dimensions (``Fixed()``: search them all).
        max_micro_batch_size: the largest micro-batch size tried (powers of two), in samples.
        zero_bubble: also try zb_h1 (Megatron target).
        tp_across_nodes: also try tp groups spanning whole nodes (``layouts.layouts_for``); without it they are
            tried only when no configuration inside a node fits in memory.
        warm_start: begin a new study with one lean probe per layout (``anchor_params``); the benchmark turns it
            off to show what it adds.
        polish: after the study (throughput objective), evaluate every configuration of the 3 best layouts found
            with the bulk cost model and rank them too (they are not Optuna trials).
        attention: the attention kernel of a preset or spec model (``pptune.model.spec.with_attention``).
        overlap_grad_reduce / overlap_param_gather: Megatron's overlap flags for every configuration.
    """

    trials: int = 200
    seed: int = 0
    objective: str = "throughput"
    exhaustive: bool = False
    storage: str | None = None
    study_name: str | None = None
    resume: bool = False
    replace_study: bool = False
    target: str = "deepspeed"
    dtype: str = "bf16"
    fixed: Fixed = Fixed()
    max_micro_batch_size: int = 16
    zero_bubble: bool = False
    tp_across_nodes: bool = False
    warm_start: bool = True
    polish: bool = True
    attention: str | None = None  # flash or unfused for a preset/spec model (None: the spec's own)
    overlap_grad_reduce: bool | None = None  # Megatron's overlap flags (None: the target's default)
    overlap_param_gather: bool | None = None

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchSettings:
    """How the search ran (written to plan.json): the method, and the study's resolved name and redacted storage."""

    method: str  # "tpe", "nsga2" or "exhaustive"
    objective: str  # "throughput" or "pareto"
    trials: int  # requested total trials (0 for exhaustive)
    seed: int
    storage: str | None  # redacted URL, None = in memory
    study_name: str | None
    resume: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanResult:
    """The outcome of ``plan``: the recommendation, its estimate and everything evaluated."""

    model: ModelSource
    cluster: Cluster
    global_batch_size: int
    space: SearchSpace
    settings: SearchSettings
    best: ParallelConfig
    estimate: Estimate
    profile: Profile  # the profile the best configuration was estimated with (its tp)
    ranking: pd.DataFrame
    study: Any | None  # optuna.Study, None for exhaustive
    evaluations: int  # objective calls (trials) or configurations (exhaustive)
    search_seconds: float

    @property
    def gpus(self) -> int:
        return self.space.gpus


def plan(
    model_or_profile: str,
    *,
    cluster: str | Cluster,
    gpus: int,
    global_batch_size: int,
    settings: PlanSettings = PlanSettings(),
    progress: bool = False,
    estimate_fn: EstimateFn | None = None,
) -> PlanResult:
    """Search configurations and return the best feasible one with the full ranking.

    Args:
        model_or_profile: a preset (``gpt2-medium``), a spec string (``gpt:layers=..``) or a profile JSON path.
        cluster: a cluster preset, JSON path or Cluster; resized to ``gpus``.
        gpus: GPUs to plan for (tp * pp * dp).
        global_batch_size: samples per optimizer step.
        settings: how to search (PlanSettings: trials, seed, objective, storage, target, dtype, pins ...).
        progress: show a tqdm bar on stderr.
        estimate_fn: replaces pptune.cost.estimate.estimate (tests).

    Raises:
        ConfigError: an empty space (GPUs that factor into nothing the model accepts, a global batch below dp),
            a bad storage URL, an existing study without resume.
        InfeasibleError: no configuration fits in GPU memory (the message names the closest candidate).
    """
    st = settings
    start = time.perf_counter()
    source = resolve_model(model_or_profile, attention=st.attention)
    hw = load_cluster(cluster, num_gpus=gpus)
    if hw.num_gpus != gpus:
        raise ConfigError(f"{gpus} GPUs do not fill whole nodes of {hw.gpus_per_node} ({hw.name}): "
                          f"use a multiple of {hw.gpus_per_node} or fewer GPUs than a node holds")

    def space_for(across: bool) -> SearchSpace:  # the space, with tp groups across nodes or not
        return build_space(
            num_blocks=source.num_blocks, gpus=gpus, gpus_per_node=hw.gpus_per_node, global_batch_size=global_batch_size,
            num_heads=source.num_heads, num_kv_heads=source.num_kv_heads, target=st.target, dtype=st.dtype,
            fixed=st.fixed, max_micro_batch_size=st.max_micro_batch_size, zero_bubble=st.zero_bubble,
            block_kind=source.block_kind, allowed_tp=_measured_tp(source, st.fixed, hw), model_name=source.name,
            seq_len=source.seq_len,
            cluster_name=hw.name, overlap_grad_reduce=st.overlap_grad_reduce, overlap_param_gather=st.overlap_param_gather,
            tp_across_nodes=across,
        )
    space = space_for(st.tp_across_nodes)
    evaluator = Evaluator(
        profile_for_tp=lambda tp: source.profile(hw, tp=tp, dtype=st.dtype, micro_batch_sizes=space.micro_batch_sizes),
        cluster=hw, estimate_fn=estimate_fn,
    )
    study = None
    if st.exhaustive or _fits_budget(space, st):
        ran = SearchSettings(method="exhaustive", objective=st.objective, trials=0, seed=st.seed, storage=None,
                             study_name=None, resume=False)
        _run_exhaustive(space, evaluator, progress=progress)
        evaluated = evaluator.evaluated
        calls = len(evaluated)
    else:
        name = st.study_name or study_name_for(model=source.name, cluster=hw.name, gpus=gpus,
                                               global_batch_size=global_batch_size, target=st.target,
                                               objective=st.objective, space=space)
        ran = SearchSettings(method="nsga2" if st.objective == "pareto" else "tpe", objective=st.objective,
                             trials=st.trials, seed=st.seed, storage=redact_url(st.storage), study_name=name,
                             resume=st.resume)
        rdb = open_storage(st.storage)
        try:
            job = job_identity(model=source.name, cluster=hw.name, gpus=gpus, global_batch_size=global_batch_size,
                               target=st.target, dtype=st.dtype, objective=st.objective, space=space)
            study = open_study(storage=rdb, study_name=name, objective=st.objective, seed=st.seed, resume=st.resume,
                               replace=st.replace_study, job=job)
            if st.warm_start and not study.trials:  # a new study only: a resumed one already holds its probes
                for params in anchor_params(space, limit=max(1, st.trials // 4)):
                    study.enqueue_trial(params, skip_if_exists=True)
            fn = make_objective(space, evaluator, objective=st.objective, memory_limit_bytes=hw.gpu.memory_bytes)
            run_study(study, fn, total_trials=st.trials, progress=progress)
            # Every finished trial counts, those of an earlier (killed) run included: re-evaluating is cheap.
            done = completed_trials(study)
        finally:
            close_storage(rdb)
        evaluated = _unique([evaluator(config_from_attrs(t.user_attrs)) for t in done])
        calls = len(done)
        if st.objective == "throughput" and st.polish:
            evaluated = _unique(evaluated + _polish(space, evaluator, evaluated))
    if not any(e.feasible for e in evaluated):
        evaluated = evaluated + _unique([evaluator(c) for c in _memory_corners(space)])
    if not any(e.feasible for e in evaluated) and not st.tp_across_nodes and gpus > hw.gpus_per_node:
        # Nothing inside a node fits: rank the layouts whose tp groups span nodes too (every configuration of them,
        # through the bulk path), priced at the inter-node rate like any other.
        wider = space_for(True)
        across = [lay for lay in wider.layouts if lay.tp > hw.gpus_per_node]
        if across:
            space = wider
            evaluated = _unique(evaluated + evaluator.evaluate_many([c for lay in across for c in space.configs_for(lay)]))
    feasible = [e for e in evaluated if e.feasible]
    if not feasible:
        raise InfeasibleError(_infeasible_message(evaluated, hw))
    ranking = ranking_frame(ranking_row(e.config, e.estimate, error=e.error) for e in evaluated)
    if st.objective == "pareto":
        ranking = mark_pareto(ranking)
    by_label = {config_label(e.config): e for e in feasible}
    best = evaluator(by_label[ranking.iloc[0]["label"]].config)  # the full Estimate (exhaustive holds summaries)
    assert isinstance(best.estimate, Estimate)
    return PlanResult(
        model=source, cluster=hw, global_batch_size=global_batch_size, space=space, settings=ran,
        best=best.config, estimate=best.estimate, profile=evaluator.profile(best.config.tp), ranking=ranking,
        study=study, evaluations=calls, search_seconds=time.perf_counter() - start,
    )


def _fits_budget(space: SearchSpace, st: PlanSettings) -> bool:
    """A space of at most ``trials`` configurations is evaluated whole: every point, in less time than TPE takes.

    Not when the user asked for a study of their own (``--storage`` without the plan directory's own study, or
    ``--resume``): that study is what they want kept. Counting stops at ``trials + 1``, so a huge space costs
    nothing to test.
    """
    if st.resume or (st.storage is not None and not st.replace_study):
        return False
    return sum(1 for _ in itertools.islice(space.configs(), st.trials + 1)) <= st.trials


def _run_exhaustive(space: SearchSpace, evaluator: Evaluator, *, progress: bool) -> None:
    from tqdm import tqdm

    configs = list(space.configs())
    with tqdm(total=len(configs), desc="pptune plan (exhaustive)", unit="config", file=sys.stderr,
              disable=not progress or not sys.stderr.isatty(), leave=False) as bar:
        evaluator.evaluate_many(configs)  # the bulk cost model: every configuration in one pooled call
        bar.update(len(configs))


POLISH_LAYOUTS = 3  # layouts whose every configuration the polish evaluates


def _polish(space: SearchSpace, evaluator: Evaluator, evaluated: list[Evaluation]) -> list[Evaluation]:
    """Every configuration of the study's best ``POLISH_LAYOUTS`` layouts, evaluated exactly (bulk, no Optuna trial).

    TPE finds a good layout (tp, pp, dp) far more often than the right combination of the per-layout choices
    (micro-batch size, ZeRO, recompute, schedule, split) within its budget, and the layout whose best trial leads
    is not always the layout whose best configuration leads. A layout has tens to a few hundred configurations,
    which the bulk path evaluates in milliseconds, so the plan takes the best of all of them.
    """
    ranked = sorted((e for e in evaluated if e.feasible), key=lambda e: -e.estimate.tokens_per_s)
    keys = list(dict.fromkeys((e.config.tp, e.config.pp, e.config.dp) for e in ranked))[:POLISH_LAYOUTS]
    layouts = [lay for key in keys for lay in space.layouts if (lay.tp, lay.pp, lay.dp) == key]
    return evaluator.evaluate_many([c for lay in layouts for c in space.configs_for(lay)])


def _unique(evals: list[Evaluation]) -> list[Evaluation]:
    seen: dict[ParallelConfig, Evaluation] = {}
    for e in evals:
        seen.setdefault(e.config, e)
    return list(seen.values())


def _memory_corners(space: SearchSpace) -> list[ParallelConfig]:
    """The least-memory configurations of each layout: smallest micro-batch, most ZeRO, most recompute."""
    recompute = "full" if "full" in space.recomputes else space.recomputes[-1]
    out = []
    for layout in space.layouts:
        mbs = min(space.micro_batch_sizes_for(layout), default=None)
        if mbs is None:
            continue
        m = space.global_batch_size // (mbs * layout.dp)
        schedule, vpp = space.schedules_for(layout, m)[0]
        zero = max(space.zero_stages_for(layout))
        for partition in space.partitions_for(layout):
            for sp in space.sequence_parallel_for(layout)[-1:]:
                out.append(space.make(layout, mbs=mbs, schedule=schedule, vpp=vpp, zero=zero, recompute=recompute,
                                      partition=partition, sp=sp))
    return out


def _infeasible_message(evaluated: list[Evaluation], cluster: Cluster) -> str:
    gpu_gib = cluster.gpu.memory_gib
    scored = [e for e in evaluated if e.estimate is not None]
    if not scored:
        reasons = sorted({e.error or "?" for e in evaluated})
        return f"no configuration could be estimated: {'; '.join(reasons[:3])}"
    low = min(scored, key=lambda e: (e.estimate.peak_memory_bytes, config_label(e.config)))  # type: ignore[union-attr]
    est = low.estimate
    assert est is not None
    stage = max(range(len(est.memory_per_stage_bytes)), key=lambda i: est.memory_per_stage_bytes[i])
    c = low.config
    what = (f"pp={c.pp} tp={c.tp} dp={c.dp} mbs={c.micro_batch_size} zero={c.zero_stage} "
            f"{c.recompute} recompute")
    if est.peak_memory_bytes / GIB <= gpu_gib and est.infeasible_reason:
        return f"no configuration is feasible; the closest ({what}) fails: {est.infeasible_reason}"
    return (f"no configuration fits in GPU memory: lowest peak memory found: {est.peak_memory_bytes / GIB:.1f} GiB "
            f"on stage {stage} with {what}; the GPU ({cluster.gpu.name}) has {gpu_gib:g} GiB")


def _measured_tp(source: ModelSource, fixed: Fixed | None, cluster: Cluster) -> tuple[int, ...] | None:
    """A measured profile's layers are not tensor-parallel: plan at its own tp unless the user pins ``--tp``.

    Re-sharding measured layers to another tp is only a linear approximation, and the layers that were measured
    (pptune's runtime included) cannot run split; an analytic profile is computed for every tp, so it is free.
    The file is read through ``profile_for``'s cache, which the evaluator then hits instead of parsing it again.
    """
    if source.profile_path is None or (fixed is not None and fixed.tp is not None):
        return None
    from pptune.profile.source import profile_for

    profile = profile_for(source.profile_path, cluster)
    return (profile.tp,) if profile.source == "measured" else None
