"""write_plan_dir: write a plan directory atomically, so a reader never sees a half-written plan.

The files go to ``DIR.tmp-XXXX`` beside DIR; then an existing DIR is renamed aside, the new one renamed
into place and the old one deleted. The Optuna study in ``DIR/study.db`` (the default storage, which
``--resume`` needs) is copied into the new directory before the swap. A directory that holds neither
``plan.json`` nor ``study.db`` is not pptune's and is never replaced.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pptune.emit.files import plan_files, ranking_csv
from pptune.errors import ConfigError

if TYPE_CHECKING:
    from pptune.planner import PlanResult

STUDY_FILE = "study.db"
KEEP = (STUDY_FILE, f"{STUDY_FILE}-journal", f"{STUDY_FILE}-wal", f"{STUDY_FILE}-shm")


def is_plan_dir(path: Path) -> bool:
    """True for a directory pptune may replace: empty, or holding plan.json or study.db."""
    return path.is_dir() and (not any(path.iterdir()) or (path / "plan.json").exists() or (path / STUDY_FILE).exists())


def check_out_dir(path: str | os.PathLike) -> Path:
    """Refuse early (before any search) an output path pptune must not replace."""
    out = Path(path)
    if out.exists() and not is_plan_dir(out):
        raise ConfigError(f"--out {out}: exists and is not a pptune plan directory (no plan.json or study.db); "
                          "choose another path")
    return out


def write_plan_dir(result: PlanResult, out_dir: str | os.PathLike, *, command: str | None = None,
                   ds_overrides: dict[str, Any] | None = None) -> Path:
    """Write every file of the plan into ``out_dir`` (replacing an older plan there) and return its path.

    Args:
        result: what ``pptune.planner.plan`` returned.
        out_dir: the plan directory.
        command: the command line that made the plan (recorded in plan.json, launch.sh and HOW_TO_RUN.md).
        ds_overrides: dotted ds_config.json keys to set (``{"optimizer.params.lr": 3e-4}``).

    Raises:
        ConfigError: ``out_dir`` exists and is not a plan directory.
    """
    out = check_out_dir(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = plan_files(result, command=command, ds_overrides=ds_overrides)
    files["ranking.csv"] = (ranking_csv(result), 0o644)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        for name, (text, mode) in files.items():
            path = tmp / name
            path.write_text(text)
            path.chmod(mode)
        tmp.chmod(0o755)
        if out.exists():
            for name in KEEP:
                if (out / name).exists():
                    shutil.copy2(out / name, tmp / name)  # copy, not move: the old plan stays whole until the swap
            old = out.parent / f"{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
