"""runs_file: a JSONL of estimate --batch lines with measurements; any bad line refuses the file in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pptune.calibrate.runs_file import is_runs_file, load_runs_file
from pptune.commands.calibrate import batch_defaults
from pptune.errors import ConfigError, SchemaError

DEFAULTS = {**batch_defaults(), "cluster": "a100-80g", "dtype": "bf16"}
GOOD = {"model": "gpt:layers=4,hidden=512,heads=8", "dp": 16, "global_batch_size": 64, "measured_step_ms": 120.5}


def write(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_runs_file_reads_configuration_measurements_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, "", {**GOOD, "tp": 2, "dp": 8, "measured_peak_memory_gib": 12.0, "label": "tp2"})
    runs = load_runs_file(path, DEFAULTS)
    assert [r.label for r in runs] == ["runs.jsonl:1", "tp2"]
    assert runs[0].item["dp"] == 16 and runs[0].cluster.name == "a100-80g" and runs[0].measured_step_ms == 120.5
    assert runs[1].measured_peak_memory_gib == 12.0
    assert is_runs_file(path.read_text()) and not is_runs_file("iteration 1 | elapsed time per iteration (ms): 3")


@pytest.mark.parametrize(("line", "error", "message"), [
    ("{not json", SchemaError, "line 2: not valid JSON"),
    ({**GOOD, "measured_step_ms": None}, SchemaError, "line 2: measured_step_ms is required"),
    ({**GOOD, "measured_step_ms": -3}, SchemaError, "line 2: measured_step_ms must be a positive number"),
    ({**GOOD, "measured_peak_memory_gib": "a lot"}, SchemaError, "line 2: measured_peak_memory_gib must be"),
    ({**GOOD, "colour": "red"}, SchemaError, "line 2: unknown keys \\['colour'\\]"),
    ({**GOOD, "tp": 3}, ConfigError, "line 2: "),  # 8 heads are not divisible by tp 3
    ({**GOOD, "global_batch_size": 65}, ConfigError, "line 2: "),
])
def test_a_bad_line_refuses_the_file_naming_it(tmp_path: Path, line: object, error: type, message: str) -> None:
    path = write(tmp_path, GOOD, line)
    with pytest.raises(error, match=f"^{path}: {message}"):
        load_runs_file(path, DEFAULTS)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no runs"):
        load_runs_file(write(tmp_path, ""), DEFAULTS)
