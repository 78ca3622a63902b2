"""Per-stage measured vs estimated memory of a ``pptune validate --local`` report folder, written beside it.

Usage: ``python benchmarks/local_report_memory.py results/validation/local/2026-12-03-tp2`` -> ``memory.md`` in that
folder (``pptune.validation.memory_table``; runs made before measured.json recorded memory are left out).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pptune.fileio import write_text_atomic
from pptune.validation.memory_table import markdown, stage_memory


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path)
    args = p.parse_args(argv)
    runs = [d for d in (args.report / "runs").iterdir() if d.is_dir()] if (args.report / "runs").is_dir() else []
    if not runs:
        print(f"local_report_memory: error: {args.report}/runs holds no run directories", file=sys.stderr)
        return 2
    command = shlex.join(["python", "benchmarks/local_report_memory.py", *(sys.argv[1:] if argv is None else argv)])
    text = f"# Memory per stage: predicted vs measured\n\n- command: `{command}`\n\n" + markdown(stage_memory(runs))
    write_text_atomic(args.report / "memory.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
