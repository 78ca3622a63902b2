"""pptune.validation.memory_table: per-stage measured vs estimated tensor memory of a local report's runs."""

from __future__ import annotations

import json

import pytest

from pptune.errors import ConfigError
from pptune.validation.memory_table import markdown, stage_memory


def _run(path, stages):
    path.mkdir()
    (path / "measured.json").write_text(json.dumps({"stages": stages}))
    return path


def test_tensor_parts_against_the_measured_peak(tmp_path):
    parts = {"weights": 100, "gradients": 100, "optimizer": 200, "activations": 0, "cuda_context": 10_000}
    a = _run(tmp_path / "a", [{"stage": 0, "peak_allocated_bytes": 500, "estimated_memory_parts_bytes": parts},
                              {"stage": 1, "peak_allocated_bytes": 320, "estimated_memory_parts_bytes": parts}])
    old = _run(tmp_path / "old", [{"stage": 0, "estimated_memory_parts_bytes": parts}])  # before memory was recorded
    rows = stage_memory([old, a])
    assert [(r.run, r.stage, r.predicted_bytes) for r in rows] == [("a", 0, 400), ("a", 1, 400)]  # no framework part
    assert [r.error for r in rows] == pytest.approx([-0.2, 0.25])
    text = markdown(rows)
    assert "2 stages: median |error| 22.5%, max 25.0%, mean signed +2.5%" in text and "| a | 1 |" in text


def test_a_broken_record_is_one_error(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "measured.json").write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        stage_memory([tmp_path / "r"])
    assert markdown([]) == "No run recorded memory.\n"
