"""Checks profile_for: profile files load (cached by path and mtime), presets and spec strings become analytic profiles."""

from __future__ import annotations

import os

import pytest

from pptune.errors import ConfigError, SchemaError
from pptune.hardware import load_cluster
from pptune.model.spec import PRESETS
from pptune.profile.analytic import analytic_profile
from pptune.profile.schema import save_profile
from pptune.profile.source import profile_for


def test_preset_gives_analytic_profile_for_the_cluster_gpu() -> None:
    cluster = load_cluster("h100-80g", num_gpus=16)
    p = profile_for("gpt3-13b", cluster, tp=4, micro_batch_sizes=(1, 2))
    assert p.source == "analytic" and p.device == cluster.gpu.name and p.tp == 4 and p.micro_batch_sizes == (1, 2)
    assert profile_for("gpt3-13b", cluster, tp=4, micro_batch_sizes=(2, 1)) is p  # cached
    assert profile_for("gpt3-13b", "h100-80g", tp=4, micro_batch_sizes=(1, 2)) is p
    assert profile_for("gpt3-13b", cluster, tp=8, micro_batch_sizes=(1, 2)) is not p


def test_spec_string_and_sequence_parallel() -> None:
    p = profile_for("gpt:layers=4,hidden=512,heads=8", "a100-40g", tp=2, sequence_parallel=True)
    assert p.num_layers == 6 and p.tp == 2


def test_json_path_loads_the_file_and_reloads_when_it_changes(tmp_path) -> None:
    path = tmp_path / "p.json"
    a = analytic_profile(PRESETS["gpt2-small"], load_cluster("a100-80g").gpu, micro_batch_sizes=(1,))
    save_profile(a, path)
    first = profile_for(str(path), "h100-80g", tp=8)
    assert first == a and first.tp == 1  # files come back as made, whatever tp is asked
    assert profile_for(str(path), "h100-80g") is first
    b = analytic_profile(PRESETS["gpt2-medium"], load_cluster("a100-80g").gpu, micro_batch_sizes=(1,))
    save_profile(b, path)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert profile_for(str(path), "h100-80g") == b


def test_errors() -> None:
    with pytest.raises(ConfigError, match=r"\*\.json"):
        profile_for("gpt5", "a100-80g")
    with pytest.raises(SchemaError, match="cannot read"):
        profile_for("/nonexistent/p.json", "a100-80g")
    with pytest.raises(SchemaError, match="unknown cluster"):
        profile_for("gpt2-small", "tpu")
