"""Predict every grid configuration, write its plan directory, and run it for real (one after the other).

Runs are sequential: on this 2-core machine one 2-rank run already uses every core, and a second one at the
same time would slow both (docs/REFERENCE.md §2). A run that fails (crash, timeout, out of memory) is kept as a
record with its reason, so the report says what did not run instead of silently dropping it. The host is
shared: each run's disturbance by other processes is measured (``host_load.py``) and a disturbed run repeated.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pptune.cost.estimate import estimate
from pptune.errors import RunError
from pptune.hardware import Cluster
from pptune.model.spec import TransformerSpec
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile
from pptune.validation.grid import cluster_for
from pptune.validation.host_load import ForeignCpu, wait_for_quiet
from pptune.validation.host_speed import host_speed_ms
from pptune.validation.record import RunRecord, predicted_idle, with_measurement
from pptune.validation.run_dir import write_run_dir

Log = Callable[[str], None]


def run_slug(config: ParallelConfig) -> str:
    """A directory name for a configuration, e.g. ``pp2-dp1-mbs4-m4-uniform`` (``tp2-pp1-...`` at tp > 1)."""
    part = config.partition.replace(":", "_") if config.pp > 1 else "nopipe"
    tp = f"tp{config.tp}-" if config.tp > 1 else ""
    return f"{tp}pp{config.pp}-dp{config.dp}-mbs{config.micro_batch_size}-m{config.num_microbatches}-{part}"


def predict_records(configs: Sequence[ParallelConfig], *, profile: Profile, cluster: Cluster, model: str,
                    spec: TransformerSpec | None, profile_label: str, runs_dir: str | os.PathLike,
                    command: str | None = None, tp_profiles: Mapping[int, Profile] | None = None,
                    tp_profile_labels: Mapping[int, str] | None = None) -> list[RunRecord]:
    """Estimate each configuration and write its plan directory under ``runs_dir``; nothing runs yet.

    ``tp_profiles`` maps a tensor-parallel size to a profile measured at it (``pptune profile --tp``); a
    configuration of another tp uses ``profile`` (re-sharded by the cost model); ``tp_profile_labels`` name their
    files in each plan.json.

    Raises:
        ConfigError: a configuration the cost model or DeepSpeed's config rejects.
    """
    records = []
    for config in configs:
        own = config.tp in (tp_profiles or {})
        prof = tp_profiles[config.tp] if own else profile  # type: ignore[index]
        label = (tp_profile_labels or {}).get(config.tp, profile_label) if own else profile_label
        est = estimate(prof, cluster_for(cluster, config), config)  # a correctness row may need more nodes
        path = write_run_dir(Path(runs_dir) / run_slug(config), config=config, estimate=est, profile=prof,
                             cluster=cluster, model=model, spec=spec, profile_label=label, command=command)
        records.append(RunRecord(config=config, plan_dir=str(path), predicted_ms=est.step_time_ms,
                                 predicted_idle=predicted_idle(est, config), breakdown_ms=est.breakdown.to_dict(),
                                 boundaries=est.boundaries))
    return records


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def measure_records(records: Sequence[RunRecord], *, steps: int, warmup: int, timeout_s: float,
                    retries: int = 0, max_foreign: float = 0.1, quiet_wait_s: float = 0.0,
                    host_reference_ms: float | None = None, max_host_drift: float = 0.1,
                    log: Log | None = None) -> list[RunRecord]:
    """Run each record's plan directory with real DeepSpeed (``run_plan``) and attach the measurement.

    Before each run, wait up to ``quiet_wait_s`` for a moment when other processes use at most half of
    ``max_foreign`` of the machine. A run during which they took more than ``max_foreign`` (``ForeignCpu``) is
    repeated, up to ``retries`` more times; so is one whose host-speed probe (``host_speed.host_speed_ms``, before
    and after the run, averaged) is more than ``max_host_drift`` off ``host_reference_ms`` (the probe around the
    profile; None: not probed). The least disturbed attempt is kept and the record says how many were made.
    Nothing is discarded silently: the kept attempt's disturbance and host-speed ratio are in the record.
    """
    from pptune.runtime.launch import run_plan

    out = []
    for i, record in enumerate(records, 1):
        tries: list[RunRecord] = []
        best: RunRecord | None = None
        for _ in range(retries + 1):
            if quiet_wait_s > 0:
                wait_for_quiet(threshold=max_foreign / 2, timeout_s=quiet_wait_s)
            load = load_average()
            before_ms = host_speed_ms() if host_reference_ms is not None else None
            meter = ForeignCpu().start()
            try:
                measured = run_plan(record.plan_dir, steps=steps, warmup=warmup, timeout_s=timeout_s)
            except RunError as exc:  # a crash is not a disturbance: not repeated
                best = dataclasses.replace(record, failure=str(exc), load_average=load, foreign_share=meter.share(),
                                           attempts=len(tries) + 1)
                break
            share = meter.share()
            after_ms = host_speed_ms() if host_reference_ms is not None else None
            tries.append(dataclasses.replace(with_measurement(record, measured), load_average=load,
                                             foreign_share=share,
                                             host_ratio=_host_ratio(before_ms, after_ms, host_reference_ms)))
            if _badness(tries[-1], max_foreign, max_host_drift) <= 1.0:
                break
            if log is not None and len(tries) <= retries:
                log(f"[{i}/{len(records)}] {record.label}: other processes used {_disturbance(tries[-1]):.0%} of the "
                    f"machine, host speed x{_f(tries[-1].host_ratio)} of the profile's; running it again")
        if best is None:
            best = dataclasses.replace(min(tries, key=lambda r: _badness(r, max_foreign, max_host_drift)),
                                       attempts=len(tries))
        if log is not None:
            if best.ok:
                log(f"[{i}/{len(records)}] {best.label}: predicted {best.predicted_ms:.1f} ms, measured "
                    f"{best.measured_ms:.1f} ms ({best.error:+.1%}), other processes {_disturbance(best):.0%}, "
                    f"host speed x{_f(best.host_ratio)} of the profile's")
            else:
                log(f"[{i}/{len(records)}] {best.label}: FAILED: {best.failure}")
        out.append(best)
    return out


def _disturbance(record: RunRecord) -> float:
    return record.foreign_share if record.foreign_share is not None else 0.0


def _host_ratio(before_ms: float | None, after_ms: float | None, reference_ms: float | None) -> float | None:
    """The probes around a run (their mean, or the one that worked) over the reference; None without either."""
    probes = [x for x in (before_ms, after_ms) if x is not None]
    if not probes or not reference_ms:
        return None
    return sum(probes) / len(probes) / reference_ms


def _badness(record: RunRecord, max_foreign: float, max_host_drift: float) -> float:
    """The larger of the two disturbances, each over its limit: a run at 1 or below is kept as it is."""
    drift = abs(record.host_ratio - 1.0) if record.host_ratio is not None else 0.0
    return max(_disturbance(record) / max_foreign if max_foreign > 0 else 0.0,
               drift / max_host_drift if max_host_drift > 0 else 0.0)


def _f(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}"
