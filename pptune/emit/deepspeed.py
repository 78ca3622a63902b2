"""The DeepSpeed JSON config of a plan (``ds_config.json``), with only keys DeepSpeed 0.19 reads.

Facts checked in the installed DeepSpeed (0.19.8):
- Batch rule ``train_batch_size = train_micro_batch_size_per_gpu * gradient_accumulation_steps * dp``
  (runtime/config.py ``_batch_assertion``); with a PipelineModule ``gradient_accumulation_steps`` is the number
  of micro-batches per pipeline step and ``dp`` the data-parallel size, not the GPU count.
- The pipeline engine reads ``activation_checkpoint_interval`` (overrides the module's when > 0),
  ``pipe_partitioned`` and ``grad_partitioned`` (used only when the model-parallel size > 1) and ``use_reentrant``
  from the ``pipeline`` section (runtime/pipe/engine.py); ``stages``/``partition``/``seed_layers`` are parsed and
  never read, so they are left out (the split lives in pipeline.json).
- ``"torch_adam": true`` makes the ``AdamW`` type build ``torch.optim.AdamW`` instead of JIT-compiling
  ``fused_adam`` (runtime/engine.py ``get_optimizer_configuration``); on GPUs remove it to use FusedAdam.
- bf16 + ZeRO-1 with ``data_types.grad_accum_dtype = fp32`` selects the BF16_Optimizer (fp32 gradient
  accumulation, engine ``_do_optimizer_sanity_check``); the same key with ZeRO 0 raises NotImplementedError
  there ("unsupported mix"), and ZeRO 2/3 keep their own gradient partitions, so it is only set for ZeRO-1.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from pptune.errors import ConfigError
from pptune.parallel import ParallelConfig
from pptune.target_checks import check
from pptune.targets import DEEPSPEED_PIPE

DEFAULT_OPTIMIZER: dict[str, Any] = {
    "type": "AdamW",
    "params": {"lr": 1e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01, "torch_adam": True},
}


def ds_config(
    config: ParallelConfig,
    *,
    steps_per_print: int = 10,
    optimizer: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config dict of one configuration.

    Args:
        config: the configuration (target ``deepspeed``).
        steps_per_print: DeepSpeed's logging period in steps.
        optimizer: replaces the default ``AdamW`` section (lr 1e-4, betas (0.9, 0.95), weight decay 0.01).
        overrides: dotted keys set last, e.g. ``{"optimizer.params.lr": 3e-4}``; they may not change the
            batch keys, the ZeRO stage or the precision, which the plan's estimate depends on.

    Raises:
        ConfigError: a configuration DeepSpeed cannot run (ZeRO >= 2 with pp > 1, a non-1F1B pipeline schedule)
            or an override of a planned key.
    """
    if config.target != "deepspeed":
        raise ConfigError(f"ds_config needs a deepspeed-target configuration, got target {config.target}")
    check(config, step=False)  # pptune.target_checks: ZeRO with pp, the pipeline schedule (ParallelConfig's own rules)
    cfg: dict[str, Any] = {
        "train_batch_size": config.global_batch_size,
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.num_microbatches,
        "steps_per_print": steps_per_print,
        "wall_clock_breakdown": False,
        "gradient_clipping": 1.0,
        "optimizer": copy.deepcopy(dict(optimizer) if optimizer is not None else DEFAULT_OPTIMIZER),
        "zero_optimization": {"stage": config.zero_stage},
    }
    if config.dtype == "bf16":
        cfg["bf16"] = {"enabled": True}
        if config.zero_stage == 1:
            cfg["data_types"] = {"grad_accum_dtype": "fp32"}
    elif config.dtype == "fp16":
        # Dynamic loss scaling (loss_scale 0) with DeepSpeed's documented defaults.
        cfg["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000,
                       "hysteresis": 2, "min_loss_scale": 1}
    if engine_kind(config) == "pipeline":
        # Read by PipelineEngine; partitioning p2p buffers over tp ranks only applies when tp > 1, and not with
        # sequence parallelism: each tp rank then sends its own part of the sequence, while DeepSpeed's
        # PartitionedTensor assumes every tp rank holds the same activation (pptune.runtime.topology).
        partitioned = config.tp > 1 and not config.sequence_parallel
        cfg["pipeline"] = {
            "activation_checkpoint_interval": config.recompute_interval,
            "pipe_partitioned": partitioned,
            "grad_partitioned": partitioned,
        }
    for key, value in (overrides or {}).items():
        _set_dotted(cfg, key, value)
    return cfg


PLANNED_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "zero_optimization.stage", "bf16", "fp16", "pipeline.activation_checkpoint_interval")


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse overrides of keys the estimate depends on (before any search runs)."""
    for key in overrides:
        if any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in PLANNED_KEYS):
            raise ConfigError(f"--ds-override {key!r} would change what the plan is estimated for; "
                              "fix it with pptune plan's own options instead")
    return dict(overrides)


def _set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    check_overrides({key: value})
    node = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node = nxt
    node[parts[-1]] = value


# DeepSpeed config fields (their last dotted part) that hold numbers (betas: a list of two), from DeepSpeed's
# config docs and runtime/config.py / zero/config.py / fp16 loss scaler / the optimizer and LR scheduler params.
NUMERIC_FIELDS = frozenset({
    "lr", "eps", "weight_decay", "momentum", "betas", "gradient_clipping", "steps_per_print", "loss_scale",
    "initial_scale_power", "loss_scale_window", "hysteresis", "min_loss_scale", "warmup_min_lr", "warmup_max_lr",
    "warmup_num_steps", "total_num_steps", "cos_min_ratio", "reduce_bucket_size", "allgather_bucket_size",
    "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold", "stage3_max_live_parameters",
    "stage3_max_reuse_distance", "sub_group_size", "buffer_count", "buffer_size", "max_in_cpu", "bias_correction",
})
# Fields that hold strings: only these take a bare (unquoted) value; every other value must be JSON.
STRING_FIELDS = frozenset({
    "type", "device", "nvme_path", "grad_accum_dtype", "communication_data_type", "warmup_type", "tag_validation",
    "output_path", "job_name", "output_file", "load_path", "mode",
})


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line: the value is JSON (``3e-4``, ``true``, ``[0.9, 0.95]``, ``"text"``).

    A bare word is taken as a string only for DeepSpeed fields that hold strings (``optimizer.type=Adam``);
    a known numeric field must get a finite number (``optimizer.params.lr=abc`` is refused, not written into
    ds_config.json as "abc"). NaN and Infinity are refused anywhere: they are not JSON.
    """
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--ds-override expects key=value (e.g. optimizer.params.lr=3e-4), got {text!r}")
    field = key.rsplit(".", 1)[-1]
    want = "a list of numbers" if field == "betas" else "true or false" if field == "bias_correction" else "a number"
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError, RecursionError):
        if field in NUMERIC_FIELDS:
            raise ConfigError(f"--ds-override {key}={raw!r}: DeepSpeed's {field} must be {want}") from None
        if field not in STRING_FIELDS:
            raise ConfigError(f"--ds-override {key}={raw!r}: not a JSON value; give a number, true/false, a list, "
                              f"or quote a string ({key}='\"{raw}\"')") from None
        value = raw
    if field in NUMERIC_FIELDS and not _numeric(value, field):
        raise ConfigError(f"--ds-override {key}={raw!r}: DeepSpeed's {field} must be {want}")
    return key, value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _numeric(value: Any, field: str) -> bool:
    if field == "bias_correction":
        return isinstance(value, bool)
    if field == "betas":
        return isinstance(value, list) and bool(value) and all(_numeric(v, "lr") for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def engine_kind(config: ParallelConfig) -> str:
    """``pipeline`` (deepspeed.pipe.PipelineEngine) or ``plain`` (pp == 1 with ZeRO 2/3, which the pipeline engine rejects)."""
    return "plain" if config.pp == 1 and config.zero_stage > DEEPSPEED_PIPE.max_zero_stage_with_pp else "pipeline"
