"""The command table stays thin: building the parser (what ``pptune --help`` does) imports no heavy library."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "pandas", "matplotlib", "optuna", "deepspeed", "numpy")


def test_help_imports_no_heavy_library() -> None:
    code = ("import json, sys; from pptune.cli import build_parser; build_parser(); "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert json.loads(out) == []
