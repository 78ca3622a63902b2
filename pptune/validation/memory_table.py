"""Measured against estimated memory per stage of a ``validate --local`` report's runs (issue 15, issue 17).

Each run directory's ``measured.json`` keeps, per stage, the largest rank's peak of allocated tensor bytes
(``pptune.runtime.memory_probe``) beside the estimate's memory parts that the run's plan.json predicted. The
comparison is of the *tensor* parts (``pptune.cost.memory.TENSOR_PARTS``): the framework parts (CUDA context,
NCCL buffers, allocator slack) are not tensors and are 0 on a CPU.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from pptune.cost.memory import TENSOR_PARTS
from pptune.errors import ConfigError

MIB = 2**20


@dataclass(frozen=True, kw_only=True, slots=True)
class StageMemory:
    run: str
    stage: int
    predicted_bytes: int
    measured_bytes: int

    @property
    def error(self) -> float:
        return self.predicted_bytes / self.measured_bytes - 1.0


def stage_memory(run_dirs: list[Path]) -> list[StageMemory]:
    """One row per stage of each run whose measured.json records memory; a run without any is left out."""
    rows = []
    for run in sorted(run_dirs):
        path = run / "measured.json"
        if not path.is_file():
            continue
        try:
            stages = json.loads(path.read_text()).get("stages", [])
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not JSON ({exc.msg})") from None
        for s in stages:
            parts, measured = s.get("estimated_memory_parts_bytes"), s.get("peak_allocated_bytes")
            if not parts or not measured:
                continue
            rows.append(StageMemory(run=run.name, stage=int(s["stage"]), measured_bytes=int(measured),
                                    predicted_bytes=int(sum(parts.get(name, 0) for name in TENSOR_PARTS))))
    return rows


def markdown(rows: list[StageMemory]) -> str:
    """A summary line (median and max |error|, signed mean) and the table."""
    if not rows:
        return "No run recorded memory.\n"
    errors = [r.error for r in rows]
    lines = [f"Per-stage allocated memory, {len(rows)} stages: median |error| "
             f"{statistics.median(abs(e) for e in errors):.1%}, max {max(abs(e) for e in errors):.1%}, "
             f"mean signed {statistics.fmean(errors):+.1%} (predicted tensor parts / measured peak - 1).", "",
             "| run | stage | predicted MiB | measured MiB | error |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.run} | {r.stage} | {r.predicted_bytes / MIB:.1f} | {r.measured_bytes / MIB:.1f} | {r.error:+.1%} |"
              for r in rows]
    return "\n".join(lines) + "\n"
