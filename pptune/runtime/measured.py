"""measured.json: what a real DeepSpeed run of a plan did — step times, per-stage engine timers, stages built.

Written by rank 0 of ``python -m pptune.runtime.train`` (atomically: temporary file, then rename) and read by
``pptune measure`` and the validation/calibration code. Each rank's timers are summed per training step and
averaged over the measured steps: pipeline instructions under their TrainSchedule names (``ForwardPass``,
``SendActivation``, ...) and, with ``--ds-timers``, DeepSpeed's own timers (``fwd_microstep``, ...); see timers.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pptune.errors import SchemaError
from pptune.fileio import write_json_atomic

MEASURED_SCHEMA_VERSION = 1
MEASURED_FILE = "measured.json"
# Properties written beside the fields for readers without pptune; ignored when loading.
_DERIVED = ("median_step_ms", "mean_step_ms", "samples_per_s")


@dataclass(frozen=True, kw_only=True, slots=True)
class TimerStat:
    """One DeepSpeed timer on one rank, over the measured steps."""

    per_step_ms: float  # mean over steps of the timer's total time within one step
    calls_per_step: float  # mean number of start/stop intervals per step (e.g. micro-batches)

    @property
    def per_call_ms(self) -> float:
        return self.per_step_ms / self.calls_per_step if self.calls_per_step else 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class RankRecord:
    """What one rank built and timed."""

    rank: int
    stage: int  # pipeline stage id
    dp_rank: int  # data-parallel replica id
    layer_start: int  # first layer this rank built (inclusive)
    layer_stop: int  # exclusive
    num_forward_funcs: int  # layers actually built (len(module.forward_funcs))
    param_count: int  # parameters held by this rank
    peak_memory_bytes: int  # CUDA: max_memory_allocated; CPU: the process's peak RSS (DeepSpeed's CPU accelerator)
    timers: dict[str, TimerStat]
    # pptune.runtime.memory_probe; None in runs recorded before it
    peak_allocated_bytes: int | None = None  # peak live tensor bytes (CUDA max_memory_allocated; CPU profiler)
    peak_reserved_bytes: int | None = None  # CUDA max_memory_reserved; None on CPU
    memory_source: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class StageRecord:
    """One pipeline stage: its layer range and its timers averaged over its data-parallel ranks."""

    stage: int
    layer_start: int
    layer_stop: int
    param_count: int
    timers_ms: dict[str, float]  # timer name -> mean per-step total (ms)
    peak_allocated_bytes: int | None = None  # the largest of its ranks' (None when a rank did not record it)
    peak_reserved_bytes: int | None = None
    estimated_memory_parts_bytes: dict[str, int] | None = None  # plan.json's estimate of this stage, when present


@dataclass(frozen=True, kw_only=True, slots=True)
class Measured:
    """A measured run of one plan (see module docstring)."""

    schema_version: int = MEASURED_SCHEMA_VERSION
    plan_dir: str
    model: str
    seq_len: int
    pp: int
    dp: int
    tp: int
    world_size: int
    partition_method: str  # DeepSpeed method name, or "explicit"
    boundaries: tuple[int, ...]  # module.parts as built (length pp + 1)
    planned_boundaries: tuple[int, ...] | None  # pipeline.json "boundaries", when given
    micro_batch_size: int
    num_microbatches: int  # gradient_accumulation_steps
    train_batch_size: int
    dtype: str  # "fp32", "bf16" or "fp16"
    zero_stage: int
    activation_checkpoint_interval: int
    optimizer: str  # class of the optimizer DeepSpeed built (e.g. "Adam", "FusedAdam")
    warmup: int  # steps run before timing
    step_times_ms: tuple[float, ...]  # every measured step, barrier to barrier, rank 0's clock
    final_loss: float | None
    deepspeed_timers: bool  # DeepSpeed's wall_clock_breakdown timers recorded beside the instruction timers
    stages: tuple[StageRecord, ...]
    ranks: tuple[RankRecord, ...]
    device: str  # "cpu" or "cuda"
    device_name: str
    threads: int | None  # torch threads per rank on CPU
    torch_version: str
    deepspeed_version: str
    date: str  # ISO 8601
    command: str

    @property
    def steps(self) -> int:
        return len(self.step_times_ms)

    @property
    def median_step_ms(self) -> float:
        return statistics.median(self.step_times_ms)

    @property
    def mean_step_ms(self) -> float:
        return statistics.fmean(self.step_times_ms)

    @property
    def samples_per_s(self) -> float:
        return self.train_batch_size / (self.median_step_ms / 1000.0)

    def to_dict(self) -> dict[str, Any]:
        data = _jsonable(dataclasses.asdict(self))
        data.update({name: getattr(self, name) for name in _DERIVED})
        return data

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "<measured>") -> Measured:
        return _parse(data, origin)


def stage_records(ranks: list[RankRecord] | tuple[RankRecord, ...],
                  estimated_memory: list[dict[str, int]] | None = None) -> tuple[StageRecord, ...]:
    """Group rank records by stage; timers are averaged over the stage's data-parallel ranks, memory is the
    largest of theirs; ``estimated_memory`` (per stage) is the estimate's memory parts kept beside it."""
    out = []
    for stage in sorted({r.stage for r in ranks}):
        members = [r for r in ranks if r.stage == stage]
        names = sorted({name for r in members for name in r.timers})
        timers = {
            name: statistics.fmean(r.timers[name].per_step_ms for r in members if name in r.timers) for name in names
        }
        first = members[0]
        out.append(StageRecord(stage=stage, layer_start=first.layer_start, layer_stop=first.layer_stop,
                               param_count=first.param_count, timers_ms=timers,
                               peak_allocated_bytes=_largest(r.peak_allocated_bytes for r in members),
                               peak_reserved_bytes=_largest(r.peak_reserved_bytes for r in members),
                               estimated_memory_parts_bytes=(estimated_memory[stage] if estimated_memory
                                                             and stage < len(estimated_memory) else None)))
    return tuple(out)


def _largest(values: Any) -> int | None:
    values = list(values)
    return None if not values or any(v is None for v in values) else max(values)


def save_measured(measured: Measured, path: str | os.PathLike) -> Path:
    """Write atomically (temporary file in the same folder, then rename): readers never see half a file."""
    return write_json_atomic(path, measured.to_dict())


def load_measured(path: str | os.PathLike) -> Measured:
    """Load and validate a measured.json; any problem raises SchemaError naming the file and field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read measured run ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return _parse(data, str(path))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# --- validation ---------------------------------------------------------------------------------

_INT = (int,)
_NUM = (int, float)


def _field(data: dict, key: str, types: tuple[type, ...], origin: str, *, optional: bool = False) -> Any:
    if data.get(key) is None:
        if optional:
            return None
        raise SchemaError(f"{origin}: field '{key}': missing")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise SchemaError(f"{origin}: field '{key}': expected {'/'.join(t.__name__ for t in types)}, got {value!r}")
    if types in (_INT, _NUM) and (not math.isfinite(value) or value < 0):
        raise SchemaError(f"{origin}: field '{key}': must be non-negative and finite, got {value!r}")
    return value


def _int_list(data: dict, key: str, origin: str, *, optional: bool = False) -> tuple[int, ...] | None:
    raw = _field(data, key, (list,), origin, optional=optional)
    if raw is None:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        raise SchemaError(f"{origin}: field '{key}': expected a list of integers, got {raw!r}")
    return tuple(raw)


def _parse_rank(raw: Any, origin: str) -> RankRecord:
    if not isinstance(raw, dict):
        raise SchemaError(f"{origin}: expected an object, got {raw!r}")
    timers_raw = _field(raw, "timers", (dict,), origin)
    timers = {}
    for name, stat in timers_raw.items():
        if not isinstance(stat, dict):
            raise SchemaError(f"{origin}.timers.{name}: expected an object, got {stat!r}")
        where = f"{origin}.timers.{name}"
        timers[name] = TimerStat(per_step_ms=float(_field(stat, "per_step_ms", _NUM, where)),
                                 calls_per_step=float(_field(stat, "calls_per_step", _NUM, where)))
    ints = {k: _field(raw, k, _INT, origin) for k in ("rank", "stage", "dp_rank", "layer_start", "layer_stop",
                                                      "num_forward_funcs", "param_count", "peak_memory_bytes")}
    memory = {k: _field(raw, k, _INT, origin, optional=True) for k in ("peak_allocated_bytes", "peak_reserved_bytes")}
    source = _field(raw, "memory_source", (str,), origin, optional=True)
    return RankRecord(**ints, **memory, memory_source=source, timers=timers)


def _estimated_memory(data: dict, origin: str) -> list[dict[str, int]] | None:
    """The estimate's memory parts per stage, as saved beside the stages (absent in older files)."""
    stages = data.get("stages")
    if not isinstance(stages, list):
        return None
    out = []
    for i, raw in enumerate(stages):
        parts = raw.get("estimated_memory_parts_bytes") if isinstance(raw, dict) else None
        if parts is None:
            return None
        if not isinstance(parts, dict):
            raise SchemaError(f"{origin}: stages[{i}].estimated_memory_parts_bytes: expected an object, got {parts!r}")
        out.append({str(k): _field(parts, k, _INT, f"{origin}: stages[{i}].estimated_memory_parts_bytes")
                    for k in parts})
    return out


def _parse(data: Any, origin: str) -> Measured:
    if not isinstance(data, dict):
        raise SchemaError(f"{origin}: top level: expected an object, got {type(data).__name__}")
    version = _field(data, "schema_version", _INT, origin)
    if version != MEASURED_SCHEMA_VERSION:
        raise SchemaError(f"{origin}: field 'schema_version': unknown version {version} "
                          f"(this pptune reads {MEASURED_SCHEMA_VERSION})")
    steps = _field(data, "step_times_ms", (list,), origin)
    if not steps or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in steps):
        raise SchemaError(f"{origin}: field 'step_times_ms': must be a non-empty list of positive numbers, got {steps!r}")
    ranks = tuple(_parse_rank(r, f"{origin}: ranks[{i}]") for i, r in enumerate(_field(data, "ranks", (list,), origin)))
    ints = {k: _field(data, k, _INT, origin) for k in (
        "seq_len", "pp", "dp", "tp", "world_size", "micro_batch_size", "num_microbatches", "train_batch_size",
        "zero_stage", "activation_checkpoint_interval", "warmup")}
    strs = {k: _field(data, k, (str,), origin) for k in (
        "plan_dir", "model", "partition_method", "dtype", "optimizer", "device", "device_name", "torch_version",
        "deepspeed_version", "date", "command")}
    boundaries = _int_list(data, "boundaries", origin)
    assert boundaries is not None
    if len(boundaries) != ints["pp"] + 1:
        raise SchemaError(f"{origin}: field 'boundaries': {list(boundaries)} has {len(boundaries)} entries, "
                          f"pp {ints['pp']} needs {ints['pp'] + 1}")
    loss = _field(data, "final_loss", _NUM, origin, optional=True)
    threads = _field(data, "threads", _INT, origin, optional=True)
    return Measured(
        schema_version=version, **ints, **strs, boundaries=boundaries,
        planned_boundaries=_int_list(data, "planned_boundaries", origin, optional=True),
        step_times_ms=tuple(float(s) for s in steps), final_loss=None if loss is None else float(loss),
        deepspeed_timers=bool(data.get("deepspeed_timers", False)), ranks=ranks,
        stages=stage_records(ranks, _estimated_memory(data, origin)),
        threads=threads,
    )
