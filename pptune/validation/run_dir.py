"""A runnable plan directory for one configuration (no search): what ``pptune.runtime`` needs, plus the estimate.

``pptune plan`` writes plan directories from a search result; validation and ``pptune tune`` run configurations
they chose themselves, so they write the same three files directly: ``pipeline.json`` (the PipelineModule
arguments, keys as in ``pptune.emit.files.pipeline_json``), ``ds_config.json`` (``pptune.emit.deepspeed.ds_config``)
and ``plan.json`` (the configuration, the cluster and the estimate that ``pptune measure`` compares against).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pptune.cost.types import Estimate
from pptune.emit.deepspeed import ds_config, engine_kind
from pptune.emit.files import partition_method
from pptune.hardware import Cluster
from pptune.model.spec import TransformerSpec
from pptune.parallel import ParallelConfig
from pptune.planner.ranking import config_label
from pptune.profile.schema import Profile


def pipeline_dict(config: ParallelConfig, estimate: Estimate, profile: Profile, *, model: str,
                  spec: TransformerSpec | None) -> dict[str, Any]:
    """pipeline.json: the stages (explicit boundaries unless a DeepSpeed method reproduces them) and the model."""
    names = [layer.name for layer in profile.layers]
    bounds = list(estimate.boundaries)
    return {
        "num_stages": config.pp,
        "topology": {"pp": config.pp, "tp": config.tp, "dp": config.dp},
        "sequence_parallel": config.sequence_parallel,
        "partition_method": partition_method(config.partition),
        "planned_partition": config.partition,
        "boundaries": bounds,
        "vpp": config.vpp,
        "activation_checkpoint_interval": config.recompute_interval,
        "engine": engine_kind(config),
        "model": model,
        "model_spec": spec.to_dict() if spec is not None else None,
        "seq_len": profile.seq_len,
        "micro_batch_size": config.micro_batch_size,
        "num_microbatches": config.num_microbatches,
        "schedule": config.schedule,
        "dtype": config.dtype,
        "layers": names,
        "stage_layers": [names[lo:hi] for lo, hi in zip(bounds, bounds[1:], strict=False)],
    }


def plan_dict(config: ParallelConfig, estimate: Estimate, cluster: Cluster, *, profile_label: str,
              command: str | None) -> dict[str, Any]:
    """plan.json: what was predicted for this configuration, and from what."""
    return {
        "command": command,
        "label": config_label(config),
        "config": config.to_dict(),
        "profile": profile_label,
        "cluster": cluster.to_dict(),
        "estimate": estimate.to_json_dict(),
    }


def write_run_dir(path: str | os.PathLike, *, config: ParallelConfig, estimate: Estimate, profile: Profile,
                  cluster: Cluster, model: str, spec: TransformerSpec | None, profile_label: str,
                  command: str | None = None) -> Path:
    """Write pipeline.json, ds_config.json and plan.json into ``path`` (each atomically) and return ``path``.

    Args:
        path: the directory (created; files already there are replaced, a measured.json from an earlier run too).
        config: the configuration (target deepspeed).
        estimate: ``estimate(profile, cluster, config)``; its boundaries become the planned stages.
        profile: the profile the estimate used (layer names, sequence length).
        cluster: the cluster the estimate used.
        model: the model string the runtime rebuilds the layers from.
        spec: its TransformerSpec (preferred by the runtime when given).
        profile_label: where the profile came from (a path), recorded in plan.json.
        command: the command line, recorded in plan.json.

    Raises:
        ConfigError: a configuration DeepSpeed cannot run (from ``ds_config``).
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "pipeline.json": pipeline_dict(config, estimate, profile, model=model, spec=spec),
        "ds_config.json": ds_config(config),
        "plan.json": plan_dict(config, estimate, cluster, profile_label=profile_label, command=command),
    }
    for name, data in files.items():
        _write_json(out / name, data)
    (out / "measured.json").unlink(missing_ok=True)  # a stale measurement must not pass for this plan's
    return out


def _write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
