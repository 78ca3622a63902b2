"""The Optuna side of the search: trial -> ParallelConfig, the objective, storage, create/resume, the run loop.

Every trial suggests the same fixed set of categorical parameters (a static space suits both TPE and
NSGA-II); choices that do not fit the sampled layout are clamped to the nearest valid one below
(e.g. micro-batch 8 with 2 samples per replica becomes 2), and the configuration actually evaluated is
stored in the trial's user attributes. Memory violations go to Optuna as a constraint
(``trial.set_constraint``, Optuna 5's replacement of the deprecated ``constraints_func``), so TPE and
NSGA-II steer away from them while the points themselves stay in the ranking.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from pptune.errors import ConfigError
from pptune.parallel import ParallelConfig
from pptune.planner.evaluator import Evaluation, Evaluator, memory_violation_gib
from pptune.planner.ranking import config_label
from pptune.planner.space import Layout, SearchSpace

if TYPE_CHECKING:
    import optuna

OBJECTIVES = ("throughput", "pareto")


def _clamp(value: int, allowed: tuple[int, ...]) -> int:
    """The largest allowed value <= value (the smallest allowed one when none is)."""
    below = [a for a in allowed if a <= value]
    return max(below) if below else min(allowed)


def _nearest_layout(space: SearchSpace, tp: int, pp: int, cp: int = 1) -> Layout:
    """The layout with this tp and the largest pp <= the asked one (else the nearest tp below, else above), at the
    nearest context-parallel size the space has for them."""
    tps = sorted({lay.tp for lay in space.layouts})
    tp = _clamp(tp, tuple(tps))
    pps = tuple(sorted({lay.pp for lay in space.layouts if lay.tp == tp}))
    pp = _clamp(pp, pps)
    cp = _clamp(cp, tuple(sorted({lay.cp for lay in space.layouts if lay.tp == tp and lay.pp == pp})))
    return next(lay for lay in space.layouts if lay.tp == tp and lay.pp == pp and lay.cp == cp)


def trial_config(space: SearchSpace, trial: optuna.Trial) -> ParallelConfig:
    """Sample one valid configuration; choices that do not fit the sampled layout are clamped to fit it.

    Sizes are suggested as integer indices into their sorted candidate lists (tp, pp, micro-batch size,
    ZeRO stage, recompute level, vpp), so TPE's Parzen estimators see that neighbouring values behave alike;
    unordered choices (partition, schedule, sequence parallelism) are categorical.
    """

    def ordinal(name: str, choices: tuple):
        return choices[0] if len(choices) == 1 else choices[trial.suggest_int(name, 0, len(choices) - 1)]

    def pick(name: str, choices: tuple):
        return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))

    tp = ordinal("tp_index", tuple(sorted({lay.tp for lay in space.layouts})))
    pp = ordinal("pp_index", tuple(sorted({lay.pp for lay in space.layouts})))
    cps = tuple(sorted({lay.cp for lay in space.layouts}))
    layout = _nearest_layout(space, tp, pp, ordinal("cp_index", cps) if len(cps) > 1 else 1)
    mbs = _clamp(ordinal("micro_batch_size_index", space.micro_batch_sizes), space.micro_batch_sizes_for(layout))
    zero = _clamp(ordinal("zero_stage", space.zero_stages), space.zero_stages_for(layout))
    recompute = ordinal("recompute_index", space.recomputes)
    partition = pick("partition", space.partitions)
    schedule = pick("schedule", space.schedules)
    vpp = ordinal("vpp_index", space.vpps) if "interleaved_1f1b" in space.schedules else 1
    sp = pick("sequence_parallel", space.sequence_parallel)
    m = space.global_batch_size // (mbs * layout.dp)
    valid = space.schedules_for(layout, m)
    if schedule == "interleaved_1f1b":
        vpps = tuple(v for s, v in valid if s == schedule)
        schedule, vpp = (schedule, _clamp(vpp, vpps)) if vpps else valid[0]
    else:
        schedule, vpp = (schedule, 1) if (schedule, 1) in valid else valid[0]
    partitions = space.partitions_for(layout)
    if partition not in partitions:
        partition = partitions[0]
    if not space.chunks_ok(schedule, layout.pp, vpp, partition):  # uneven interleaved chunks: a balanced split
        partition = next(p for p in partitions if space.chunks_ok(schedule, layout.pp, vpp, p))
    if sp not in space.sequence_parallel_for(layout):
        sp = False
    return space.make(layout, mbs=mbs, schedule=schedule, vpp=vpp, zero=zero, recompute=recompute,
                      partition=partition, sp=sp)


def anchor_params(space: SearchSpace, *, limit: int) -> list[dict]:
    """Warm-start trials: per layout, its leanest configuration without recompute (smallest micro-batch, the
    highest ZeRO stage the layout allows, 1F1B, the first partition method), at most ``limit`` of them.

    Random start-up trials rarely land in narrow feasible corners (a 70B model fits pp=1 only with ZeRO-3),
    after which TPE never looks there; one probe per layout shows the sampler every layout's best case.
    """
    tps = tuple(sorted({lay.tp for lay in space.layouts}))
    pps = tuple(sorted({lay.pp for lay in space.layouts}))
    layouts = list(space.layouts)
    if len(layouts) > limit:  # spread the probes over the layout list
        layouts = [layouts[round(i * (len(layouts) - 1) / max(1, limit - 1))] for i in range(limit)]
    out = []
    for lay in dict.fromkeys(layouts):
        params: dict = {"tp_index": tps.index(lay.tp), "pp_index": pps.index(lay.pp), "micro_batch_size_index": 0,
                        "zero_stage": space.zero_stages.index(max(space.zero_stages_for(lay))), "recompute_index": 0,
                        "partition": space.partitions[0], "schedule": space.schedules[0], "vpp_index": 0,
                        "sequence_parallel": space.sequence_parallel[-1]}
        sizes = {"tp_index": len(tps), "pp_index": len(pps), "micro_batch_size_index": len(space.micro_batch_sizes),
                 "zero_stage": len(space.zero_stages), "recompute_index": len(space.recomputes),
                 "partition": len(space.partitions), "schedule": len(space.schedules),
                 "vpp_index": len(space.vpps) if "interleaved_1f1b" in space.schedules else 1,
                 "sequence_parallel": len(space.sequence_parallel)}
        out.append({k: v for k, v in params.items() if sizes[k] > 1})
    return out


def make_objective(space: SearchSpace, evaluator: Evaluator, *, objective: str, memory_limit_bytes: int,
                   on_evaluation: Callable[[Evaluation], None] | None = None):
    """The Optuna objective: tokens/s (and peak memory in GiB for ``pareto``), memory as a constraint."""

    def run(trial: optuna.Trial):
        config = trial_config(space, trial)
        ev = evaluator(config)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("label", config_label(config))
        trial.set_constraint("peak_memory_over_gib", memory_violation_gib(ev, memory_limit_bytes))
        if on_evaluation is not None:
            on_evaluation(ev)
        tokens = ev.estimate.tokens_per_s if ev.estimate is not None else 0.0
        if objective == "pareto":
            peak_gib = ev.estimate.peak_memory_bytes / 2**30 if ev.estimate is not None else 1e6
            return tokens, peak_gib
        return tokens

    return run


def make_sampler(objective: str, seed: int, *, shared: bool = False):
    """TPE (NSGA-II for ``pareto``); ``shared``: several workers on one study, so TPE's ``constant_liar`` counts
    the trials other workers are running as bad results and does not propose them again meanwhile."""
    import optuna

    if objective == "pareto":
        return optuna.samplers.NSGAIISampler(seed=seed)
    # multivariate TPE models the joint choice (layout x micro-batch x ...) instead of each one alone.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning for multivariate and constant_liar
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=shared)


def open_storage(url: str | None):
    """An Optuna RDB storage for ``url`` (None: in memory; ``journal:PATH``: a journal file), or ConfigError.

    A SQLite file is opened in WAL mode with ``synchronous=NORMAL``: a commit no longer waits for an fsync
    (several per trial otherwise, which made trials 5-10x slower here), and a killed process still loses
    nothing that was committed (only an OS crash could).
    """
    if url is None:
        return None
    import optuna

    if url.startswith(JOURNAL_PREFIX):
        return _journal_storage(url.removeprefix(JOURNAL_PREFIX))
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        kwargs = {}
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            kwargs["creator"] = _sqlite_connector(parsed.database)
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # sqlalchemy ArgumentError/OperationalError, a missing DB driver, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--storage {redact_url(url)}: cannot open it as an Optuna RDB storage ({reason})") from None


JOURNAL_PREFIX = "journal:"  # --storage journal:PATH: Optuna's journal file, for workers on a shared file system


def _journal_storage(path: str):
    """Optuna's JournalStorage on one append-only file (optuna.storages.journal, Optuna 5.1).

    The lock is ``JournalFileOpenLock`` (an ``O_CREAT | O_EXCL`` lock file), which Optuna's documentation gives
    for file systems where symbolic links are not atomic (NFS); workers on several nodes append to one file.
    """
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    if not path:
        raise ConfigError("--storage journal:PATH needs a file path")
    try:
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    except OSError as exc:
        raise ConfigError(f"--storage {JOURNAL_PREFIX}{path}: cannot open it ({exc.strerror or exc})") from None


def _sqlite_connector(path: str):
    import sqlite3

    def connect():
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return connect


def close_storage(storage) -> None:
    """Close the storage's connections; SQLite then folds its WAL back into the one .db file."""
    if storage is not None and hasattr(storage, "engine"):  # a JournalStorage holds no connection
        storage.engine.dispose()


def redact_url(url: str | None) -> str | None:
    """The storage URL with any password replaced by ``***`` (safe to print and write into plan.json)."""
    return None if url is None else re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


def study_name_for(*, model: str, cluster: str, gpus: int, global_batch_size: int, target: str, objective: str,
                   space: SearchSpace) -> str:
    """``pptune-<model>-<cluster>-<N>g-gbs<G>-<target>-<objective>-<space digest>``: one study per problem."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", model).strip("_")[:60]
    return f"pptune-{slug}-{cluster}-{gpus}g-gbs{global_batch_size}-{target}-{objective}-{space.digest()}"


JOB_ATTR = "pptune_job"  # the study's user attribute recording the job it searches (see job_identity)


def job_identity(*, model: str, cluster: str, gpus: int, global_batch_size: int, target: str, dtype: str,
                 objective: str, space: SearchSpace) -> dict:
    """What a study searches: a resumed study must have been made for the same job (``--study-name`` may be reused)."""
    return {"model": model, "cluster": cluster, "gpus": gpus, "global_batch_size": global_batch_size,
            "target": target, "dtype": dtype, "objective": objective, "space": space.digest()}


def _stored_job(storage, study_name: str) -> dict | None:
    """The job a stored study records (None when it records none: made by an older pptune)."""
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name))
    job = attrs.get(JOB_ATTR)
    return job if isinstance(job, dict) else None


def check_job_matches(study_name: str, stored: dict | None, job: dict) -> None:
    """ConfigError (one line naming every difference) when a study to resume was made for another job."""
    if stored is None:
        return
    diffs = [f"{key} {stored.get(key)!r} (now {value!r})" for key, value in job.items() if stored.get(key) != value]
    if diffs:
        what = "; ".join(d.replace("space ", "search space ", 1) for d in diffs)
        raise ConfigError(f"--resume: study {study_name!r} was made for another job: {what}; resume it with the "
                          "same model, cluster, GPUs, batch and pins, or give another --study-name")


def open_study(*, storage, study_name: str, objective: str, seed: int, resume: bool, replace: bool,
               job: dict | None = None, shared: bool = False):
    """Create (or with ``resume`` load) the study; ``replace`` deletes an old one of the same name first.

    ``shared``: one of several workers on the study at once (``pptune tune --worker``): it is created by the
    first and joined by the others (resume implied), the trials others are running are left alone (not failed
    as stale), and TPE lies about them (``make_sampler(shared=True)``).

    With ``job`` (``job_identity``), a new study records it and a resumed one must match it; nothing in the
    storage is changed before that check passes.

    Raises:
        ConfigError: the study exists and neither resume nor replace was asked, its directions differ, or it
            was made for another job.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no INFO line per trial
    directions = ["maximize", "minimize"] if objective == "pareto" else ["maximize"]
    resume = resume or shared
    exists = storage is not None and study_name in {s.study_name for s in storage.get_all_studies()}
    if exists and resume:
        stored = [d.name.lower() for d in storage.get_study_directions(storage.get_study_id_from_name(study_name))]
        if stored != directions:
            raise ConfigError(f"study {study_name!r} optimises {stored}, not {directions}: use the same --objective "
                              "to resume it")
        if job is not None:
            check_job_matches(study_name, _stored_job(storage, study_name), job)
    if exists and not resume:
        if not replace:
            raise ConfigError(f"study {study_name!r} already exists in the storage; pass --resume to continue it "
                              f"or --study-name to start another")
        optuna.delete_study(study_name=study_name, storage=storage)
    study = optuna.create_study(storage=storage, study_name=study_name, directions=directions,
                                sampler=make_sampler(objective, seed, shared=shared), load_if_exists=resume)
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(f"study {study_name!r} optimises {[d.name.lower() for d in study.directions]}, "
                          f"not {directions}: use the same --objective to resume it")
    if job is not None and JOB_ATTR not in study.user_attrs:
        study.set_user_attr(JOB_ATTR, job)
    if storage is not None and not shared:
        _fail_stale_trials(study, storage)
    return study


def _fail_stale_trials(study, storage) -> None:
    """Trials left RUNNING by a killed run never finish: mark them FAIL so they are neither counted nor waited on.

    Assumes no other process works on the same study at the same time (pptune runs one search per study).
    """
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # FrozenTrial exposes no public id; the storage API is keyed by it.
        storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)


def completed_trials(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def run_study(study, objective_fn, *, total_trials: int, progress: bool = True) -> int:
    """Run trials until the study holds ``total_trials`` complete ones; returns how many ran now."""
    import optuna
    from tqdm import tqdm

    done = len(completed_trials(study))
    remaining = max(0, total_trials - done)
    # ERROR, not WARNING: a trial stopped by Ctrl-C (or any exception, which propagates: catch=()) is otherwise
    # logged with its traceback before pptune's one line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    bar = tqdm(total=total_trials, initial=done, desc="pptune plan", unit="trial", file=sys.stderr,
               disable=not progress or not sys.stderr.isatty(), leave=False)  # no bar fragments in a log
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            study.optimize(objective_fn, n_trials=remaining, callbacks=[lambda *_: bar.update(1)],
                           gc_after_trial=False, catch=())
    finally:
        bar.close()
    return remaining


def config_from_attrs(attrs: dict) -> ParallelConfig:
    """The configuration a stored trial evaluated (its ``config`` user attribute)."""
    return ParallelConfig(**attrs["config"])
