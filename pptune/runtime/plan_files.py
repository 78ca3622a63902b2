"""Read what the runtime needs from a plan directory: pipeline.json, ds_config.json and (optionally) plan.json.

A plan directory (written by ``pptune plan``) holds:
- ``pipeline.json``: the PipelineModule arguments DeepSpeed's JSON cannot hold — ``num_stages``,
  ``topology {pp, tp, dp}``, ``partition_method`` (a DeepSpeed method, or ``"explicit"`` with ``boundaries``,
  DeepSpeed-style parts of length pp + 1), ``activation_checkpoint_interval``, ``model`` (a name for
  ``load_model_layers`` or a TransformerSpec dict), ``model_spec`` (the TransformerSpec dict, preferred when
  present: a plan made from a profile file names the model, not how to build it), ``seq_len``, ``engine``
  (``pipeline``, ``plain`` or ``megatron``; the last is not runnable here) and ``sequence_parallel``
  (Megatron-style sequence parallelism of the tp > 1 layers; absent means false);
- ``ds_config.json``: the DeepSpeed config;
- ``plan.json``: the estimate (``estimate.step_time_ms``), read only to compare with a measurement.

Torch-free, so the CLI can check a plan before launching anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pptune.errors import ConfigError, SchemaError

PIPELINE_FILE = "pipeline.json"
DS_CONFIG_FILE = "ds_config.json"
PLAN_FILE = "plan.json"
EXPLICIT = "explicit"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunPlan:
    """The parts of a plan directory a real run needs."""

    plan_dir: Path
    model: str | dict  # name for load_model_layers, or a TransformerSpec dict
    seq_len: int
    pp: int
    tp: int
    dp: int
    partition_method: str  # DeepSpeed method or "explicit"
    boundaries: tuple[int, ...] | None  # required for "explicit"; informative otherwise
    activation_checkpoint_interval: int
    ds_config: dict[str, Any]
    predicted_step_ms: float | None  # plan.json estimate.step_time_ms, when present
    sequence_parallel: bool = False  # tp > 1 only (pptune.runtime.tp_blocks)

    @property
    def world_size(self) -> int:
        return self.pp * self.tp * self.dp

    @property
    def model_name(self) -> str:
        if isinstance(self.model, dict):
            return str(self.model.get("name", "spec"))
        return self.model

    @property
    def micro_batch_size(self) -> int:
        return int(self.ds_config["train_micro_batch_size_per_gpu"])

    @property
    def num_microbatches(self) -> int:
        return int(self.ds_config["gradient_accumulation_steps"])

    @property
    def zero_stage(self) -> int:
        return int(self.ds_config.get("zero_optimization", {}).get("stage", 0))

    @property
    def dtype(self) -> str:
        for key in ("bf16", "fp16"):
            if self.ds_config.get(key, {}).get("enabled", False):
                return key
        return "fp32"

    @property
    def engine(self) -> str:
        """``pipeline`` (PipelineEngine, also for pp == 1) or ``plain`` (pp == 1 with ZeRO 2/3).

        DeepSpeed's PipelineEngine asserts ZeRO stage < 2 even for one stage (runtime/pipe/engine.py).
        """
        return "plain" if self.pp == 1 and self.zero_stage >= 2 else "pipeline"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SchemaError(f"{path}: missing (is {path.parent} a plan directory from 'pptune plan'?)") from None
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def _positive_int(data: dict, key: str, origin: Path, *, default: int | None = None, minimum: int = 1) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SchemaError(f"{origin}: field '{key}': expected an integer >= {minimum}, got {value!r}")
    return value


def load_run_plan(plan_dir: str | Path) -> RunPlan:
    """Read and check a plan directory's pipeline.json and ds_config.json (and plan.json's estimate if present).

    Raises:
        SchemaError: a missing or malformed file or field.
        ConfigError: files that disagree (stage count vs topology, batch rule, boundaries length).
    """
    plan_dir = Path(plan_dir)
    if not plan_dir.is_dir():
        raise SchemaError(f"{plan_dir}: not a directory (expected a plan directory from 'pptune plan')")
    pipe_path = plan_dir / PIPELINE_FILE
    pipe = _read_json(pipe_path)
    if not isinstance(pipe, dict):
        raise SchemaError(f"{pipe_path}: expected an object")
    engine = pipe.get("engine", "pipeline")
    if engine not in ("pipeline", "plain"):
        raise ConfigError(f"{pipe_path}: engine {engine!r}: pptune's runtime runs DeepSpeed plans (pipeline or plain)")
    vpp = pipe.get("vpp", 1)
    if vpp != 1:
        raise ConfigError(f"{pipe_path}: vpp {vpp}: DeepSpeed's pipeline engine has no interleaved stages")
    topo = pipe.get("topology")
    if not isinstance(topo, dict):
        raise SchemaError(f"{pipe_path}: field 'topology': expected an object {{pp, tp, dp}}, got {topo!r}")
    pp, tp, dp = (_positive_int(topo, k, pipe_path, default=1) for k in ("pp", "tp", "dp"))
    num_stages = _positive_int(pipe, "num_stages", pipe_path, default=pp)
    if num_stages != pp:
        raise ConfigError(f"{pipe_path}: num_stages {num_stages} != topology pp {pp}")
    method = pipe.get("partition_method", "parameters")
    if not isinstance(method, str) or not method:
        raise SchemaError(f"{pipe_path}: field 'partition_method': expected a string, got {method!r}")
    raw_bounds = pipe.get("boundaries")
    boundaries = None
    if raw_bounds is not None:
        if not isinstance(raw_bounds, list) or not all(isinstance(b, int) and not isinstance(b, bool) for b in raw_bounds):
            raise SchemaError(f"{pipe_path}: field 'boundaries': expected a list of integers, got {raw_bounds!r}")
        if len(raw_bounds) != pp + 1:
            raise ConfigError(f"{pipe_path}: boundaries {raw_bounds} have {len(raw_bounds)} entries; pp {pp} needs {pp + 1}")
        boundaries = tuple(raw_bounds)
    if method == EXPLICIT and boundaries is None:
        raise SchemaError(f"{pipe_path}: partition_method 'explicit' needs a 'boundaries' list")
    model = pipe.get("model_spec") or pipe.get("model")
    if not isinstance(model, (str, dict)) or not model:
        raise SchemaError(f"{pipe_path}: field 'model': expected a model name or a spec object, got {model!r}")
    sequence_parallel = pipe.get("sequence_parallel", False)
    if not isinstance(sequence_parallel, bool):
        raise SchemaError(f"{pipe_path}: field 'sequence_parallel': expected true or false, got {sequence_parallel!r}")
    ds_path = plan_dir / DS_CONFIG_FILE
    ds = _read_json(ds_path)
    if not isinstance(ds, dict):
        raise SchemaError(f"{ds_path}: expected an object")
    _check_batch(ds, ds_path, dp)
    return RunPlan(
        plan_dir=plan_dir, model=model, seq_len=_positive_int(pipe, "seq_len", pipe_path), pp=pp, tp=tp, dp=dp,
        partition_method=method, boundaries=boundaries,
        activation_checkpoint_interval=_positive_int(pipe, "activation_checkpoint_interval", pipe_path, default=0,
                                                     minimum=0),
        ds_config=ds, predicted_step_ms=_predicted_step_ms(plan_dir / PLAN_FILE), sequence_parallel=sequence_parallel,
    )


def _check_batch(ds: dict, origin: Path, dp: int) -> None:
    """The batch rule train = micro * accumulation * dp (deepspeed/runtime/config.py), with all three keys present."""
    mbs = _positive_int(ds, "train_micro_batch_size_per_gpu", origin)
    gas = _positive_int(ds, "gradient_accumulation_steps", origin)
    tbs = ds.get("train_batch_size", mbs * gas * dp)
    if tbs != mbs * gas * dp:
        raise ConfigError(f"{origin}: train_batch_size {tbs} != micro {mbs} * accumulation {gas} * dp {dp} = {mbs * gas * dp}")


def _predicted_step_ms(path: Path) -> float | None:
    """``estimate.step_time_ms`` of plan.json; None when the file or the key is absent."""
    if not path.exists():
        return None
    data = _read_json(path)
    estimate = data.get("estimate") if isinstance(data, dict) else None
    value = estimate.get("step_time_ms") if isinstance(estimate, dict) else None
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise SchemaError(f"{path}: field 'estimate.step_time_ms': expected a positive number, got {value!r}")
    return float(value)
