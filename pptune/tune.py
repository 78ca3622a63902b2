"""tune(): Optuna over *real* runs, seeded with the cost model's best configurations.

The cost model ranks every configuration (``pptune.planner.plan``); the study is seeded with its top-k
(``study.enqueue_trial``: measured first, so the predicted best is always measured) and TPE proposes the rest.
Each trial writes a plan directory and trains it with real DeepSpeed (``run_plan``) under a timeout; the
objective is the *measured* tokens per second. A run that crashes, runs out of memory or times out is a
FAIL trial whose reason sits in its user attributes (``failure``, ``failure_kind``); a configuration the cost
model already rejects (out of memory) fails without running. A configuration proposed again is not re-run:
it takes the earlier trial's result (``repeat_of``). Storage and resume follow ``pptune plan``: SQLite in the
output directory by default; an existing study needs ``resume``.

Several workers (``shared``): each ``pptune tune --worker`` process joins one study in a storage they all reach
(an RDB URL, or ``journal:PATH`` on a shared file system) and runs its own trials on its own nodes. Before a
trial runs, the storage is read: a configuration another trial already finished is taken from it, and one that
another worker is running or about to run (a claim, then a second read; ``_Objective._shared_earlier``) is
waited for and then taken, so no configuration runs twice; the workers stop once the study holds ``trials`` finished trials (Optuna's MaxTrialsCallback).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pptune.errors import ConfigError, RunError
from pptune.parallel import ParallelConfig
from pptune.planner import Evaluator, PlanResult, PlanSettings, SearchSpace, plan
from pptune.planner.ranking import config_label
from pptune.planner.study import close_storage, open_storage, open_study, redact_url, trial_config
from pptune.validation.run import run_slug
from pptune.validation.run_dir import write_run_dir

STUDY_FILE = "tune.db"
FINISHED = ("COMPLETE", "FAIL")
PLAN_SETTINGS = PlanSettings(exhaustive=True)  # the cost model ranks every configuration before the real runs


class TrialFailed(Exception):
    """A trial whose run failed (the reason is in the trial's user attributes)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TuneSettings:
    """How each trial runs."""

    top_k: int = 4
    trials: int = 8
    timeout_s: float = 600.0
    steps: int = 5
    warmup: int = 2
    seed: int = 0


def trial_params(space: SearchSpace, config: ParallelConfig) -> dict[str, Any]:
    """The Optuna parameters under which ``pptune.planner.study.trial_config`` proposes ``config`` (for enqueue_trial)."""
    params: dict[str, Any] = {}

    def ordinal(name: str, choices: tuple, value: Any) -> None:
        if len(choices) > 1:
            params[name] = choices.index(value)

    def pick(name: str, choices: tuple, value: Any) -> None:
        if len(choices) > 1:
            params[name] = value

    ordinal("tp_index", tuple(sorted({lay.tp for lay in space.layouts})), config.tp)
    ordinal("pp_index", tuple(sorted({lay.pp for lay in space.layouts})), config.pp)
    ordinal("micro_batch_size_index", space.micro_batch_sizes, config.micro_batch_size)
    ordinal("zero_stage", space.zero_stages, config.zero_stage)
    ordinal("recompute_index", space.recomputes, config.recompute)
    pick("partition", space.partitions, config.partition)
    pick("schedule", space.schedules, config.schedule)
    if "interleaved_1f1b" in space.schedules:
        ordinal("vpp_index", space.vpps, config.vpp if config.vpp in space.vpps else space.vpps[0])
    pick("sequence_parallel", space.sequence_parallel, config.sequence_parallel)
    return params


def top_configs(result: PlanResult, k: int) -> list[ParallelConfig]:
    """The cost model's ``k`` best feasible configurations, best first."""
    rows = result.ranking[result.ranking["feasible"]].head(k)
    fields = ("tp", "pp", "dp", "micro_batch_size", "num_microbatches", "schedule", "vpp", "zero_stage", "recompute",
              "partition", "sequence_parallel", "dtype", "target")
    out = []
    for row in rows.to_dict("records"):
        values = {f: row[f] for f in fields}
        for f in ("tp", "pp", "dp", "micro_batch_size", "num_microbatches", "vpp", "zero_stage"):
            values[f] = int(values[f])
        values["sequence_parallel"] = bool(values["sequence_parallel"])
        out.append(ParallelConfig(**values))
    return out


def failure_kind(message: str) -> str:
    """``timeout``, ``out_of_memory`` or ``failed`` from a RunError message (pptune.runtime.launch wording)."""
    if "timed out" in message:
        return "timeout"
    if re.search(r"out of memory|SIGKILL", message, re.IGNORECASE):
        return "out_of_memory"
    return "failed"


def study_name(result: PlanResult) -> str:
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", result.model.name).strip("_")[:60]
    return (f"pptune-tune-{slug}-{result.cluster.name}-{result.gpus}g-gbs{result.global_batch_size}-"
            f"{result.space.digest()}")


@dataclass
class _Objective:
    """Runs one configuration per trial (see module docstring)."""

    result: PlanResult
    evaluator: Evaluator
    settings: TuneSettings
    trials_dir: Path
    command: str | None
    log: Callable[[str], None]
    run_plan: Callable[..., Any]
    seen: dict[ParallelConfig, Any] = dataclasses.field(default_factory=dict)  # config -> earlier FrozenTrial
    shared: bool = False  # other workers run trials of the same study
    poll_s: float = 1.0

    def __call__(self, trial: Any) -> float:
        config = trial_config(self.result.space, trial)
        label = config_label(config)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("label", label)
        ev = self.evaluator(config)
        if ev.estimate is not None:
            trial.set_user_attr("predicted_ms", ev.estimate.step_time_ms)
            trial.set_user_attr("predicted_tokens_per_s", ev.estimate.tokens_per_s)
        earlier = self._shared_earlier(trial, config) if self.shared else self.seen.get(config)
        if earlier is not None:
            trial.set_user_attr("repeat_of", earlier.number)
            for key in ("measured_ms", "failure", "failure_kind", "plan_dir"):
                if key in earlier.user_attrs:
                    trial.set_user_attr(key, earlier.user_attrs[key])
            if earlier.value is None:
                raise TrialFailed(earlier.user_attrs.get("failure", "failed before"))
            return float(earlier.value)
        if not ev.feasible:
            reason = ev.error or (ev.estimate.infeasible_reason if ev.estimate else None) or "rejected by the cost model"
            return self._fail(trial, f"not run: the cost model predicts it cannot run ({reason})", "out_of_memory"
                              if "GiB" in reason else "failed")
        assert ev.estimate is not None
        path = self.trials_dir / f"{trial.number:03d}-{run_slug(config)}"
        source = self.result.model
        write_run_dir(path, config=config, estimate=ev.estimate, profile=self.evaluator.profile(config.tp),
                      cluster=self.result.cluster, model=source.text if source.profile_path is None else source.name,
                      spec=source.spec, profile_label=source.profile_label(self.result.cluster), command=self.command)
        trial.set_user_attr("plan_dir", str(path))
        self.log(f"trial {trial.number}: {label} (predicted {ev.estimate.step_time_ms:.1f} ms) ...")
        try:
            measured = self.run_plan(path, steps=self.settings.steps, warmup=self.settings.warmup,
                                     timeout_s=self.settings.timeout_s)
        except RunError as exc:
            return self._fail(trial, str(exc), failure_kind(str(exc)))
        step_ms = measured.median_step_ms
        tokens = config.global_batch_size * self.evaluator.profile(config.tp).seq_len / (step_ms / 1e3)
        trial.set_user_attr("measured_ms", step_ms)
        self.log(f"trial {trial.number}: measured {step_ms:.1f} ms ({(ev.estimate.step_time_ms - step_ms) / step_ms:+.1%} "
                 f"predicted vs measured), {tokens:,.0f} tokens/s")
        return tokens

    def _shared_earlier(self, trial: Any, config: ParallelConfig) -> Any:
        """The finished trial of ``config`` in the shared study (waiting while another trial runs it), or None.

        Two phases, so that a lower-numbered trial whose ``config`` attribute lands late cannot run the same
        configuration as one that already started (the race CI hit): this trial's ``config`` attribute is its
        intent; it claims (``claimed``) only when no other trial of ``config`` has claimed and none with a lower
        number intends it, then reads again and withdraws if a lower-numbered intent appeared meanwhile. Of two
        trials that both claim, the later claimant's second read sees the other's intent, so at most one runs.
        """
        import time

        me = config.to_dict()
        deadline = time.monotonic() + 2 * self.settings.timeout_s  # a worker killed mid-run leaves it RUNNING

        def others() -> list[Any]:
            return [t for t in trial.study.get_trials(deepcopy=False) if t.number != trial.number
                    and t.user_attrs.get("config") == me and "repeat_of" not in t.user_attrs]

        while time.monotonic() < deadline:
            runs = others()
            done = [t for t in runs if t.state.name in FINISHED]
            if done:
                return min(done, key=lambda t: t.number)
            live = [t for t in runs if t.state.name == "RUNNING"]
            if not any(t.user_attrs.get("claimed") or t.number < trial.number for t in live):
                trial.set_user_attr("claimed", True)
                if not any(t.state.name == "RUNNING" and t.number < trial.number for t in others()):
                    return None  # this trial runs it; every other trial of it waits for this one
                trial.set_user_attr("claimed", False)  # a lower-numbered trial intends it: that one decides
            time.sleep(self.poll_s)
        return None

    def _fail(self, trial: Any, reason: str, kind: str) -> float:
        trial.set_user_attr("failure", reason)
        trial.set_user_attr("failure_kind", kind)
        self.log(f"trial {trial.number}: FAILED ({kind}): {reason}")
        raise TrialFailed(reason)


def _evaluator(result: PlanResult) -> Evaluator:
    hw, space, source = result.cluster, result.space, result.model
    return Evaluator(profile_for_tp=lambda tp: source.profile(hw, tp=tp, dtype=space.dtype,
                                                              micro_batch_sizes=space.micro_batch_sizes), cluster=hw)


def tune(model_or_profile: str, *, cluster: str, gpus: int, global_batch_size: int, out_dir: str | Path,
         settings: TuneSettings = TuneSettings(), storage: str | None = None, resume: bool = False,
         plan_settings: PlanSettings = PLAN_SETTINGS, command: str | None = None,
         log: Callable[[str], None] = print, run_plan: Callable[..., Any] | None = None,
         shared: bool = False) -> tuple[PlanResult, Any]:
    """Plan with the cost model, then run an Optuna study of real runs seeded with its top-k.

    Args:
        model_or_profile, cluster, gpus, global_batch_size: as for ``pptune.planner.plan``.
        out_dir: trial plan directories go to ``OUT/trials/``; the default storage is ``OUT/tune.db``.
        settings: top-k, trials (finished ones in total, failures included), per-trial timeout and steps.
        storage: an Optuna RDB URL (default ``sqlite:///OUT/tune.db``).
        resume: continue a stored study of the same problem; without it an existing study is an error.
        plan_settings: how ``plan`` ranks the configurations first (default: exhaustively).
        command: recorded in each trial's plan.json.
        log: progress lines.
        run_plan: replaces ``pptune.runtime.launch.run_plan`` (tests).
        shared: one of several workers on the study in ``storage`` (see module docstring; resume implied).

    Returns:
        The cost model's PlanResult and the Optuna study.

    Raises:
        ConfigError: bad settings, an existing study without ``resume``; as ``plan`` otherwise.
    """
    if settings.top_k < 1 or settings.trials < 1 or settings.timeout_s <= 0 or settings.steps < 1 or settings.warmup < 0:
        raise ConfigError(f"need top-k >= 1, trials >= 1, timeout > 0, steps >= 1, warmup >= 0; got {settings.top_k}, "
                          f"{settings.trials}, {settings.timeout_s:g}, {settings.steps}, {settings.warmup}")
    if shared and storage is None:
        raise ConfigError("several workers share one study: give --storage (an RDB URL or journal:PATH they all reach)")
    if run_plan is None:
        from pptune.runtime.launch import run_plan
    result = plan(model_or_profile, cluster=cluster, gpus=gpus, global_batch_size=global_batch_size,
                  settings=plan_settings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / STUDY_FILE).resolve()}"
    rdb = open_storage(url)
    try:
        study = open_study(storage=rdb, study_name=study_name(result), objective="throughput", seed=settings.seed,
                           resume=resume, replace=False, shared=shared)
        study.set_user_attr("storage", redact_url(url))
        seeds = top_configs(result, settings.top_k)
        study.set_user_attr("predicted_top", [config_label(c) for c in seeds])
        for config in seeds:
            study.enqueue_trial(trial_params(result.space, config), skip_if_exists=True)
        objective = _Objective(result=result, evaluator=_evaluator(result), settings=settings,
                               trials_dir=out / "trials", command=command, log=log, run_plan=run_plan,
                               shared=shared)
        for t in study.get_trials(deepcopy=False):
            if t.state.name in FINISHED and "config" in t.user_attrs:
                objective.seen.setdefault(ParallelConfig(**t.user_attrs["config"]), t)
        finished = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED)
        remaining = max(0, settings.trials - finished)

        def remember(study_: Any, trial: Any) -> None:
            if "config" in trial.user_attrs and "repeat_of" not in trial.user_attrs:
                objective.seen.setdefault(ParallelConfig(**trial.user_attrs["config"]), trial)

        import warnings

        import optuna
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is logged once, by _Objective
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            stop = optuna.study.MaxTrialsCallback(settings.trials, states=(TrialState.COMPLETE, TrialState.FAIL))
            study.optimize(objective, n_trials=remaining, catch=(TrialFailed,),
                           callbacks=[remember, stop] if shared else [remember], gc_after_trial=False)
    finally:
        close_storage(rdb)
    return result, study
