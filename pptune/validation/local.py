"""``validate_local``: profile, probe, predict and really run a grid of configurations on this machine.

The steps, each leaving a file in the output directory so the report can be checked and re-made:
1. profile the model with one thread per process (``profile.json``), as each rank will train with one, and
   by default as two such processes at once (``contended.py``), since the two ranks share this machine;
2. probe this machine (``cluster.json``): the links between two local ranks (alpha-beta fits of gloo p2p and
   all-reduce, ``pptune.probe``) and the engine's per-parameter step work (``engine_probe``);
3. predict every grid configuration with ``estimate`` and write its plan directory (``runs/<slug>/``);
4. run each with real DeepSpeed (``run_plan``: ``measured.json`` beside the plan);
5. score the predictions (``pptune.validation.metrics``) and, with at least 3 runs, calibrate by
   leave-one-out (every calibrated prediction comes from a fit that did not see that run) and fit once on
   all runs (``calibrated_cluster.json``, for later plans on this machine).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pptune.calibrate.local_fit import LocalFit, Sample, fit_local, leave_one_out
from pptune.errors import ConfigError, PptuneError
from pptune.hardware import Cluster, load_cluster, save_cluster
from pptune.model.spec import TransformerSpec
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile, load_profile, save_profile
from pptune.validation.grid import (
    DEFAULT_GLOBAL_BATCH,
    DEFAULT_MODEL,
    DEFAULT_PARTITIONS,
    correctness_only,
    local_grid,
)
from pptune.validation.host_load import wait_for_quiet
from pptune.validation.host_speed import host_speed_ms
from pptune.validation.metrics import Accuracy, accuracy
from pptune.validation.record import RunRecord
from pptune.validation.run import load_average, measure_records, predict_records

# A few seconds per run at one thread, yet each layer call takes milliseconds: embedding, 6 blocks and a tied LM
# head over a 4k vocabulary (with the loss) that costs about 2.5 blocks, so a uniform 2-stage split is clearly
# unbalanced (embedding + 3 blocks | 3 blocks + head) and the balanced split matters.
RANKS = 2


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalSettings:
    """What ``pptune validate --local`` runs."""

    model: str = DEFAULT_MODEL
    global_batch_size: int = DEFAULT_GLOBAL_BATCH
    partitions: tuple[str, ...] = DEFAULT_PARTITIONS
    micro_batch_sizes: tuple[int, ...] | None = None  # default: powers of two up to the global batch
    data_parallel: bool = True
    tensor_parallel: bool = True  # pp 1 x tp 2 rows and one pp 2 x tp 2 correctness row (grid.py)
    steps: int = 15
    warmup: int = 3
    timeout_s: float = 600.0
    profile_warmup: int = 5
    profile_repeat: int = 10
    profile_copies: int = 2  # concurrent profiler processes (contention of the 2 ranks); 1 = one process alone
    profile_passes: int = 2  # contended profiles taken; each layer and size keeps its fastest pass
    profile_path: str | None = None  # use this profile instead of measuring one
    cluster_path: str | None = None  # use this cluster instead of probing the links
    calibrate: bool = True
    retries: int = 2  # extra runs of a configuration disturbed by other processes
    max_foreign: float = 0.1  # share of the machine other processes may take before a run counts as disturbed
    quiet_wait_s: float = 120.0  # before each run, wait up to this long for other processes to go quiet
    host_probe: bool = True  # time the host-speed probe around the profile and every run (host_speed.py)
    max_host_drift: float = 0.1  # a run whose host-speed ratio is further than this from 1 counts as disturbed


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalValidation:
    """Everything the report shows."""

    settings: LocalSettings
    profile: Profile
    profile_label: str
    cluster: Cluster
    records: tuple[RunRecord, ...]
    before: Accuracy | None  # uncalibrated predictions vs measurements (None when no run succeeded)
    calibrated_ms: tuple[float | None, ...] | None  # leave-one-out predictions, aligned with records
    after: Accuracy | None  # leave-one-out calibrated predictions vs measurements
    fit_all: LocalFit | None  # one fit on every measured run
    load_start: float | None
    load_end: float | None
    seconds: float
    profile_host_ms: tuple[float | None, float | None] = (None, None)  # host-speed probe before / after the profile
    at_profile_speed: Accuracy | None = None  # ``before`` with each prediction x its run's host-speed ratio
    tp_profiles: dict[int, Profile] = dataclasses.field(default_factory=dict)  # measured at tp > 1 (profile --tp)

    @property
    def measured(self) -> tuple[RunRecord, ...]:
        return tuple(r for r in self.records if r.ok)


def _spec(model: str) -> TransformerSpec | None:
    """The model's spec; None for an HF config or a user factory (the runtime rebuilds it from the model string).

    A preset or spec string with a bad value (``layers=0``) is refused naming that value.
    """
    from pptune.model.spec import spec_or_none

    return spec_or_none(model)


def _measure_profile(settings: LocalSettings, sizes: tuple[int, ...], spec: TransformerSpec, command: str | None,
                     *, tp: int = 1) -> Profile:
    """The model profiled as the runs compute: ``profile_copies`` concurrent processes, or one (at ``tp``)."""
    if settings.profile_copies > 1:
        from pptune.validation.contended import contended_profile

        return contended_profile(settings.model, seq_len=spec.seq_len, micro_batch_sizes=sizes,
                                 copies=settings.profile_copies, passes=settings.profile_passes,
                                 warmup=settings.profile_warmup, repeat=settings.profile_repeat, command=command,
                                 tp=tp)
    from pptune.profile.measure import profile_model

    return profile_model(settings.model, seq_len=spec.seq_len, micro_batch_sizes=sizes, device="cpu", dtype="fp32",
                         threads=1, warmup=settings.profile_warmup, repeat=settings.profile_repeat, command=command,
                         progress=False, tp=tp)


def _profile(settings: LocalSettings, sizes: tuple[int, ...], out: Path, spec: TransformerSpec | None,
             command: str | None) -> tuple[Profile, str]:
    if settings.profile_path is not None:
        return load_profile(settings.profile_path), settings.profile_path
    assert spec is not None  # validate_local refused a model without a spec and without --profile
    profile = _measure_profile(settings, sizes, spec, command)
    return profile, str(save_profile(profile, out / "profile.json"))


def _cluster(settings: LocalSettings, out: Path, spec: TransformerSpec | None, log: Callable[[str], None]) -> Cluster:
    """The cluster the predictions use: given, or this machine probed (links and the engine's step work)."""
    if settings.cluster_path is not None:
        return load_cluster(settings.cluster_path, num_gpus=RANKS)
    from pptune.probe import probe_links
    from pptune.validation.engine_probe import contended_engine_step_ms, memory_efficiency_for

    wait_for_quiet(threshold=settings.max_foreign / 2, timeout_s=settings.quiet_wait_s)  # the probe is timed by wall clock
    raw = probe_links(nproc=RANKS)
    probe = raw["calibration"]["probe"]
    # The cost model has one bandwidth per link level for p2p and collectives. Over gloo the ring all-reduce
    # reaches about half the p2p bandwidth, and this grid's bytes are mostly collective (gradient and tied
    # embedding all-reduces of megabytes; activations of tens of kilobytes), so the links take the all-reduce
    # bus bandwidth; p2p messages keep the p2p latency, collectives the probe's per-step latency after compute.
    # Inside a step a collective follows compute and reaches less than back to back (the probe's all-reduces
    # after compute): the links take the lower of the two bus bandwidths.
    busy_gbps = probe.get("allreduce_after_compute_bus_gbps")
    raw["intra_node_gbps"] = raw["inter_node_gbps"] = min(probe["allreduce_bus_gbps"], busy_gbps or float("inf"))
    cluster = load_cluster(raw, num_gpus=RANKS)
    step_ms, count = contended_engine_step_ms(settings.model, spec.seq_len if spec is not None else 128,
                                              copies=settings.profile_copies)
    efficiency = memory_efficiency_for(step_ms, count, hbm_gbps=cluster.gpu.hbm_gbps)
    log(f"links: p2p {probe['p2p_gbps']:.2f} GB/s, {probe['p2p_latency_us']:.0f} us; all-reduce "
        f"{probe['allreduce_bus_gbps']:.2f} GB/s bus; engine step work {step_ms:.1f} ms for {count:,} parameters "
        f"(memory efficiency {efficiency:.3f} of {cluster.gpu.hbm_gbps:g} GB/s)")
    calibration = {**cluster.calibration, "engine_step": {
        "step_ms": step_ms, "parameters": count, "memory_efficiency": efficiency,
        "copies": settings.profile_copies,
        "what": "ReduceGrads flatten/scale/copy-back + fp32 clip_grad_norm + torch AdamW step, 1 thread per process "
                "(pptune.validation.engine_probe)"}}
    cluster = cluster.replace(gpu=dataclasses.replace(cluster.gpu, memory_efficiency=efficiency),
                              calibration=calibration)
    save_cluster(cluster, out / "cluster.json")
    return cluster


def grid_configs(settings: LocalSettings) -> tuple[ParallelConfig, ...]:
    return local_grid(ranks=RANKS, global_batch_size=settings.global_batch_size, partitions=settings.partitions,
                      micro_batch_sizes=settings.micro_batch_sizes, data_parallel=settings.data_parallel,
                      tensor_parallel=settings.tensor_parallel)


def score(records: tuple[RunRecord, ...], predicted: list[float] | None = None) -> Accuracy | None:
    """Accuracy over the measured records (``predicted`` replaces their own predictions when given).

    Correctness-only rows (more processes than ranks, ``grid.correctness_only``) are not scored.
    """
    ok = [(r, p) for r, p in zip(records, predicted or [r.predicted_ms for r in records], strict=True)
          if r.ok and not correctness_only(r.config, ranks=RANKS)]
    if not ok:
        return None
    return accuracy([r.label for r, _ in ok], [p for _, p in ok], [r.measured_ms for r, _ in ok],  # type: ignore[misc]
                    [r.config.global_batch_size for r, _ in ok])


def samples_of(records: tuple[RunRecord, ...], profile: Profile,
               tp_profiles: Mapping[int, Profile] | None = None) -> list[Sample]:
    return [Sample(label=r.label, profile=(tp_profiles or {}).get(r.config.tp, profile), config=r.config,
                   measured_ms=r.measured_ms)  # type: ignore[arg-type]
            for r in records if r.ok and not correctness_only(r.config, ranks=RANKS)]


def calibrate_records(records: tuple[RunRecord, ...], profile: Profile, cluster: Cluster, *, command: str | None,
                      tp_profiles: Mapping[int, Profile] | None = None,
                      ) -> tuple[tuple[float | None, ...] | None, LocalFit | None]:
    """Leave-one-out calibrated predictions (aligned with ``records``) and one fit on every measured run."""
    samples = samples_of(records, profile, tp_profiles)
    if len(samples) < 3:
        return None, None
    held_out = iter(leave_one_out(samples, cluster))
    calibrated = tuple(next(held_out) if r.ok and not correctness_only(r.config, ranks=RANKS) else None
                       for r in records)
    fit = fit_local(samples, cluster, provenance={"command": command, "method": "fit on every measured run"})
    return calibrated, fit


def validate_local(settings: LocalSettings, out_dir: str | Path, *, command: str | None = None,
                   log: Callable[[str], None] = print) -> LocalValidation:
    """Run the whole validation (module docstring) and return its results; the caller writes the report.

    Raises:
        ConfigError, SchemaError: bad settings, profile or cluster. A failing *run* is not raised: its record
        carries the reason.
    """
    start = time.monotonic()
    out = Path(out_dir)
    load_start = load_average()
    configs = grid_configs(settings)
    sizes = tuple(sorted({c.micro_batch_size for c in configs}))
    spec = _spec(settings.model)
    if spec is None and settings.profile_path is None:
        raise ConfigError(f"model {settings.model!r}: give --profile (validation profiles only preset and spec "
                          "models)")
    created = not out.exists()  # the inputs are known good: only now does OUT appear
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _validate(settings, out, configs, sizes, spec, start=start, load_start=load_start, command=command,
                         log=log)
    except (PptuneError, KeyboardInterrupt, MemoryError):
        if created:  # a validation that did not finish leaves no half-written OUT
            shutil.rmtree(out, ignore_errors=True)
        raise


def _validate(settings: LocalSettings, out: Path, configs, sizes: tuple[int, ...], spec: TransformerSpec | None, *,
              start: float, load_start, command: str | None, log: Callable[[str], None]) -> LocalValidation:
    log(f"profiling {settings.model} at micro-batch sizes {list(sizes)}: {settings.profile_copies} process(es) of "
        f"1 thread (load {load_start or 0:.2f})")
    probe = settings.host_probe and settings.profile_path is None
    host_before = host_speed_ms() if probe else None
    profile, profile_label = _profile(settings, sizes, out, spec, command)
    tp_profiles = _tp_profiles(settings, configs, sizes, out, spec, command, log)
    host_after = host_speed_ms() if probe else None
    # The contended profile keeps each layer's fastest pass, so it describes the host's faster phase: the
    # reference is the faster of the two probes around it.
    known = [x for x in (host_before, host_after) if x is not None]
    reference = min(known) if known else None
    if reference is not None:
        log(f"host speed: {_ms(host_before)} before, {_ms(host_after)} after the profile (host_speed.py)")
    log("probing the links between 2 local ranks" if settings.cluster_path is None else f"cluster {settings.cluster_path}")
    cluster = _cluster(settings, out, spec, log)
    records = predict_records(configs, profile=profile, cluster=cluster, model=settings.model, spec=spec,
                              profile_label=profile_label, runs_dir=out / "runs", command=command,
                              tp_profiles=tp_profiles,
                              tp_profile_labels={tp: str(out / f"profile_tp{tp}.json") for tp in tp_profiles})
    log(f"running {len(records)} configurations ({settings.warmup} warm-up + {settings.steps} timed steps each)")
    records = tuple(measure_records(records, steps=settings.steps, warmup=settings.warmup,
                                    timeout_s=settings.timeout_s, retries=settings.retries,
                                    max_foreign=settings.max_foreign, quiet_wait_s=settings.quiet_wait_s,
                                    host_reference_ms=reference, max_host_drift=settings.max_host_drift, log=log))
    calibrated, fit = (None, None)
    if settings.calibrate:
        calibrated, fit = calibrate_records(records, profile, cluster, command=command, tp_profiles=tp_profiles)
        if fit is not None:
            save_cluster(fit.cluster, out / "calibrated_cluster.json")
    after = score(records, [p if p is not None else r.predicted_ms for p, r in zip(calibrated, records, strict=True)]
                  ) if calibrated is not None else None
    return LocalValidation(
        settings=settings, profile=profile, profile_label=profile_label, cluster=cluster, records=records,
        before=score(records), calibrated_ms=calibrated, after=after, fit_all=fit, load_start=load_start,
        load_end=load_average(), seconds=time.monotonic() - start, profile_host_ms=(host_before, host_after),
        at_profile_speed=_at_profile_speed(records), tp_profiles=tp_profiles,
    )


def _tp_profiles(settings: LocalSettings, configs, sizes: tuple[int, ...], out: Path, spec: TransformerSpec | None,
                 command: str | None, log: Callable[[str], None]) -> dict[int, Profile]:
    """A profile measured at each tp > 1 of the grid (``profile_tp<N>.json``), timed like the tp 1 one.

    None is measured for a given ``--profile`` (its configurations at tp > 1 re-shard it) or a model without a spec.
    """
    tps = sorted({c.tp for c in configs if c.tp > 1})
    if settings.profile_path is not None or spec is None or not tps:
        return {}
    out_profiles = {}
    for tp in tps:
        log(f"profiling one rank of tp {tp} (collectives left out: the cost model prices them)")
        out_profiles[tp] = _measure_profile(settings, sizes, spec, command, tp=tp)
        save_profile(out_profiles[tp], out / f"profile_tp{tp}.json")
    return out_profiles


def _at_profile_speed(records: tuple[RunRecord, ...]) -> Accuracy | None:
    """The uncalibrated score with each prediction scaled by its run's host-speed ratio (None unless all have one)."""
    if not any(r.ok for r in records) or any(r.ok and r.host_ratio is None for r in records):
        return None
    return score(records, [r.predicted_ms * (r.host_ratio or 1.0) for r in records])


def _ms(x: float | None) -> str:
    return "?" if x is None else f"{x:.1f} ms"
