"""Fixtures for the runtime tests: a tiny GPT plan directory (pipeline.json, ds_config.json, plan.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

TINY_SPEC = {"name": "tiny", "num_layers": 4, "hidden_size": 64, "num_heads": 2, "ffn_hidden_size": 256,
             "vocab_size": 128, "seq_len": 32}


def write_plan(path: Path, *, pp: int = 2, dp: int = 1, boundaries: list[int] | None = None,
               partition_method: str = "explicit", mbs: int = 2, gas: int = 4, zero: int = 0,
               model: Any = None, predicted_ms: float | None = 50.0, checkpoint_interval: int = 0, tp: int = 1,
               sequence_parallel: bool = False, ds_pipeline: dict | None = None,
               gradient_clipping: float | None = None) -> Path:
    """A plan directory for the tiny GPT (6 pipeline layers: embedding, 4 blocks, head), or ``model``.

    ``ds_pipeline``: ds_config.json's ``pipeline`` section (DeepSpeed's defaults when None).
    """
    path.mkdir(parents=True, exist_ok=True)
    pipeline = {
        "num_stages": pp, "topology": {"pp": pp, "tp": tp, "dp": dp}, "partition_method": partition_method,
        "sequence_parallel": sequence_parallel,
        "boundaries": boundaries if boundaries is not None else ([0, 2, 6] if pp == 2 else None),
        "activation_checkpoint_interval": checkpoint_interval, "model": model if model is not None else TINY_SPEC, "seq_len": 32,
    }
    ds = {
        "train_batch_size": mbs * gas * dp, "train_micro_batch_size_per_gpu": mbs, "gradient_accumulation_steps": gas,
        "steps_per_print": 10, "wall_clock_breakdown": False,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}},  # torch_adam: no fused_adam JIT
        "zero_optimization": {"stage": zero},
    }
    if ds_pipeline is not None:
        ds["pipeline"] = ds_pipeline
    if gradient_clipping is not None:
        ds["gradient_clipping"] = gradient_clipping
    (path / "pipeline.json").write_text(json.dumps(pipeline))
    (path / "ds_config.json").write_text(json.dumps(ds))
    if predicted_ms is not None:
        (path / "plan.json").write_text(json.dumps({"estimate": {"step_time_ms": predicted_ms}}))
    return path


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    return write_plan(tmp_path / "plan")


@pytest.fixture
def make_plan(tmp_path: Path):
    """``make_plan(name, **options)``: a plan directory under tmp_path (options as in ``write_plan``)."""
    return lambda name="plan", **options: write_plan(tmp_path / name, **options)


@pytest.fixture(scope="session")
def plan_writer():
    """``write_plan`` itself, for module-scoped fixtures that write several plans (test files import no conftest)."""
    return write_plan
