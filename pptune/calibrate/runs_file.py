"""Read ``pptune calibrate --runs`` inputs: a JSONL of measured runs, or training logs (``train_logs``).

A runs file has one run per line: the keys of ``pptune estimate --batch`` (``pptune.batch_lines``; ``null`` or a
missing key takes the command line's value) plus ``measured_step_ms`` (required, > 0), optionally
``measured_peak_memory_gib`` (> 0) and ``label``. Blank lines are skipped. Any bad line refuses the whole file in
one line naming it (``FILE: line N: ...``): a calibration on the runs that happened to parse would be another one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pptune.batch_lines import build_item, decode_line, line_item, with_default_dtype
from pptune.calibrate.runs_fit import Run
from pptune.errors import ConfigError, PptuneError, SchemaError
from pptune.hardware import load_cluster

MEASURED_KEYS = ("measured_step_ms", "measured_peak_memory_gib", "label")


def read_text(path: str | os.PathLike) -> str:
    """A runs file or log as text (SchemaError naming the file when it cannot be read or is not UTF-8)."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{path}: not UTF-8 text (byte {exc.start + 1})") from None


def is_runs_file(text: str) -> bool:
    """Whether ``text`` is a JSONL runs file (its first non-blank line starts a JSON object), not a log."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    return first.lstrip().startswith("{")


def measured_number(value: Any, key: str, origin: str, *, required: bool) -> float | None:
    """A positive finite measurement (SchemaError ``origin: key ...`` otherwise; None when optional and absent)."""
    if value is None:
        if required:
            raise SchemaError(f"{origin}: {key} is required (the measured step time in ms)")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SchemaError(f"{origin}: {key} must be a positive number, got {json.dumps(value)}")
    return float(value)


def make_run(item: dict[str, Any], *, label: str, step_ms: float, peak_gib: float | None, origin: str) -> Run:
    """A Run of a complete configuration dict, checked by building it (``origin: ...`` on a bad configuration)."""
    try:
        item = with_default_dtype(item)
        build_item(item)  # the configuration must be one pptune estimate accepts
        cluster = load_cluster(item["cluster"])
    except PptuneError as exc:
        message = str(exc)
        raise type(exc)(message if message.startswith(origin) else f"{origin}: {message}") from None
    return Run(label=label, item={**item, "cluster": cluster}, measured_step_ms=step_ms,
               measured_peak_memory_gib=peak_gib)



def load_runs_file(path: str | os.PathLike, defaults: dict[str, Any], text: str | None = None) -> list[Run]:
    """Every run of a JSONL runs file (module docstring).

    Raises:
        SchemaError / ConfigError: the first bad line, as ``FILE: line N: ...``.
    """
    text = read_text(path) if text is None else text
    runs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        origin = f"{path}: line {number}"
        try:
            data = decode_line(line, number)
            step = measured_number(data.get("measured_step_ms"), "measured_step_ms", origin, required=True)
            peak = measured_number(data.get("measured_peak_memory_gib"), "measured_peak_memory_gib", origin,
                                   required=False)
            label = data.get("label")
            if label is not None and not isinstance(label, str):
                raise SchemaError(f"{origin}: label must be a string, got {json.dumps(label)}")
            item = line_item(data, number, defaults, extra_keys=MEASURED_KEYS)
        except PptuneError as exc:
            message = str(exc)
            raise type(exc)(message if message.startswith(str(path)) else f"{path}: {message}") from None
        assert step is not None
        runs.append(make_run(item, label=label or f"{Path(path).name}:{number}", step_ms=step, peak_gib=peak,
                             origin=origin))
    if not runs:
        raise ConfigError(f"{path}: no runs (every line is blank)")
    return runs
