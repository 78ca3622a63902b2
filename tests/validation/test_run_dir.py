"""A validation plan directory: the runtime reads it back, stages are DeepSpeed's method or explicit, no stale measurement."""

from __future__ import annotations

import json
from pathlib import Path

from pptune.cost.estimate import estimate
from pptune.model.spec import resolve_spec
from pptune.parallel import ParallelConfig
from pptune.runtime.plan_files import load_run_plan
from pptune.testing.profiles import TINY
from pptune.validation.run import run_slug
from pptune.validation.run_dir import write_run_dir


def _write(tmp_path: Path, profile, cluster, config: ParallelConfig) -> Path:
    est = estimate(profile, cluster, config)
    return write_run_dir(tmp_path / run_slug(config), config=config, estimate=est, profile=profile, cluster=cluster,
                         model=TINY, spec=resolve_spec(TINY), profile_label="profile.json", command="pptune test")


def test_balanced_split_is_explicit_and_read_back(tmp_path: Path, profile, cluster) -> None:
    config = ParallelConfig(pp=2, micro_batch_size=2, num_microbatches=4, dtype="fp32", partition="balanced")
    path = _write(tmp_path, profile, cluster, config)
    assert path.name == "pp2-dp1-mbs2-m4-balanced"
    plan = load_run_plan(path)
    est = estimate(profile, cluster, config)
    assert plan.partition_method == "explicit" and plan.boundaries == est.boundaries
    assert (plan.pp, plan.dp, plan.micro_batch_size, plan.num_microbatches, plan.dtype) == (2, 1, 2, 4, "fp32")
    assert plan.predicted_step_ms == est.step_time_ms
    saved = json.loads((path / "plan.json").read_text())
    assert ParallelConfig(**saved["config"]) == config and saved["profile"] == "profile.json"
    assert saved["command"] == "pptune test"


def test_uniform_split_uses_deepspeeds_method_and_stale_measurement_is_removed(tmp_path: Path, profile, cluster) -> None:
    config = ParallelConfig(pp=1, dp=2, micro_batch_size=4, num_microbatches=2, dtype="fp32", partition="uniform")
    path = tmp_path / run_slug(config)
    path.mkdir()
    (path / "measured.json").write_text("{}")
    _write(tmp_path, profile, cluster, config)
    plan = load_run_plan(path)
    assert plan.partition_method == "uniform" and (plan.pp, plan.dp) == (1, 2)
    assert plan.ds_config["train_batch_size"] == 16 and not (path / "measured.json").exists()
