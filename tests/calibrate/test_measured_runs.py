"""Measured plan directories read back as calibration samples, and the one-line errors for bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pptune.calibrate.measured_runs import load_sample
from pptune.errors import SchemaError
from pptune.testing.calibration import MEASURED_CONFIG as CONFIG
from pptune.testing.calibration import measured_dir
from pptune.testing.profiles import small_profile


def test_sample_from_plan_dir_or_measured_json(tmp_path: Path) -> None:
    path = measured_dir(tmp_path)
    cache: dict = {}
    a = load_sample(path, profiles=cache)
    b = load_sample(path / "measured.json", profiles=cache)
    assert a.config == CONFIG and a.measured_ms == 123.0 and a.label == CONFIG.label()
    assert a.profile is b.profile and len(cache) == 1  # one profile file, read once
    override = small_profile(block_ms=9.0)
    assert load_sample(path, profile=override).profile is override


def test_mismatched_measurement_is_refused(tmp_path: Path) -> None:
    other = CONFIG.replace(micro_batch_size=1, num_microbatches=8)
    path = measured_dir(tmp_path, measured_config=other)
    with pytest.raises(SchemaError, match="measured.json ran"):
        load_sample(path)


def test_missing_files_and_profiles_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="plan.json: missing"):
        load_sample(tmp_path)
    path = measured_dir(tmp_path)
    (path / "measured.json").unlink()
    with pytest.raises(SchemaError, match="measured.json"):
        load_sample(path)
    path = measured_dir(tmp_path, name="analytic")
    plan = json.loads((path / "plan.json").read_text())
    plan["profile"] = "analytic:local-cpu"
    (path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(SchemaError, match="pass --profile"):
        load_sample(path)


def test_a_measurement_under_another_name_is_read_with_the_plan_beside_it(tmp_path: Path) -> None:
    """The help allows 'their measured.json': a copy under another name is that measurement (it raised NotADirectoryError)."""
    path = measured_dir(tmp_path)
    copy = path / "measured-copy.json"
    copy.write_text((path / "measured.json").read_text())
    assert load_sample(copy).measured_ms == load_sample(path).measured_ms
    with pytest.raises(SchemaError, match="plan.json: missing"):
        load_sample(path / "nope.json")
