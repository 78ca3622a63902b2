"""Plan directories, written as one unit: a reader never sees a half-written plan, a failure leaves the old one whole.

Everything of a plan (its files, ``figures/`` and the Optuna study in ``study.db``) is built in a hidden
``.DIR.tmp-XXXX`` beside DIR; then an existing DIR is renamed aside, the new one renamed into place and the
old one deleted (Ctrl-C is held off during the two renames). A directory that holds neither ``plan.json``
nor ``study.db`` is not pptune's and is never replaced.

The study (the default storage, which ``--resume`` needs) is searched where ``--resume`` finds it only while
DIR holds no plan yet (a new DIR, or the study a killed search left): a SIGKILL then leaves DIR with only
``study.db``, which ``--resume`` continues. Once DIR holds a plan, the search runs on a copy of its study in
the temporary directory, so the old plan and the study it came from stay a consistent pair until the swap.
Any other failure (a pptune error, MemoryError, Ctrl-C) removes what this run created.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pptune.emit.files import plan_files, ranking_csv
from pptune.errors import ConfigError
from pptune.fileio import check_output_path, make_parents, remove_made, replace_dir

if TYPE_CHECKING:
    from pptune.planner import PlanResult

STUDY_FILE = "study.db"
KEEP = (STUDY_FILE, f"{STUDY_FILE}-journal", f"{STUDY_FILE}-wal", f"{STUDY_FILE}-shm")


def is_plan_dir(path: Path) -> bool:
    """True for a directory pptune may replace: empty, or holding plan.json or study.db."""
    return path.is_dir() and (not any(path.iterdir()) or (path / "plan.json").exists() or (path / STUDY_FILE).exists())


def check_out_dir(path: str | os.PathLike, *, flag: str = "--out") -> Path:
    """Refuse early (before any search) an output path pptune must not replace or cannot write."""
    out = Path(path)
    check_output_path(out, kind="directory", flag=flag, replaced=True)
    if out.exists() and not is_plan_dir(out):
        raise ConfigError(f"{flag} {out}: exists and is not a pptune plan directory (no plan.json or study.db); "
                          "choose another path")
    return out


def write_plan_files(result: PlanResult, directory: Path, *, command: str | None = None,
                     ds_overrides: dict[str, Any] | None = None) -> None:
    """Write the plan's files (not its figures or study) into the existing ``directory``."""
    files = plan_files(result, command=command, ds_overrides=ds_overrides)
    files["ranking.csv"] = (ranking_csv(result), 0o644)
    for name, (text, mode) in files.items():
        path = directory / name
        path.write_text(text)
        path.chmod(mode)


def _copy_study(src: Path, dst: Path) -> None:
    for name in KEEP:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)  # copy, not move: the old plan stays whole until the swap


OWNER_FILE = ".pptune-build-pid"  # the process building a temporary plan directory


def _remove_stale_builds(out: Path) -> None:
    """Remove temporary builds of ``out`` left by a process that no longer runs (a SIGKILL while drawing)."""
    for path in out.parent.glob(f".{glob.escape(out.name)}.tmp-*"):
        try:
            pid = int((path / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not a build of ours, or one still being set up: leave it
        if not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PlanBuild:
    """A plan directory being built: where the study lives during the search, the files, then one rename.

    Use as a context manager: leaving it by an exception removes what it created (the temporary directory,
    a new DIR, a new study in DIR, missing parent folders); ``commit()`` puts the plan in place.

    Args:
        out: the plan directory (checked with ``check_out_dir`` first).
        study: the search keeps its study in the plan directory (the default storage).
    """

    def __init__(self, out: str | os.PathLike, *, study: bool) -> None:
        self.out = check_out_dir(out)
        self._made = make_parents(self.out)
        self._fresh = not self.out.exists()
        self._had_study = (self.out / STUDY_FILE).exists()
        try:
            _remove_stale_builds(self.out)
            self.staged = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
            (self.staged / OWNER_FILE).write_text(str(os.getpid()))  # removed again when it is swapped in
            self.in_place = study and not (self.out / "plan.json").exists()
            if self.in_place and self._fresh:
                self.out.mkdir()
            elif not self._fresh and not self.in_place:
                _copy_study(self.out, self.staged)
        except BaseException:
            self.abort()
            raise

    @property
    def study_dir(self) -> Path:
        """Where the search keeps study.db: DIR while it holds no plan, else the temporary directory."""
        return self.out if self.in_place else self.staged

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{(self.study_dir / STUDY_FILE).resolve()}"

    @property
    def final_storage_url(self) -> str:
        """The study's URL once the plan is in place (what plan.json records)."""
        return f"sqlite:///{(self.out / STUDY_FILE).resolve()}"

    def commit(self) -> Path:
        """Put the built plan in place of DIR as one unit."""
        if self.in_place:
            _copy_study(self.out, self.staged)
        (self.staged / OWNER_FILE).unlink(missing_ok=True)
        replace_dir(self.staged, self.out)
        return self.out

    def abort(self) -> None:
        """Remove what this build created; an older DIR and its study stay as they were."""
        if hasattr(self, "staged"):
            shutil.rmtree(self.staged, ignore_errors=True)
        if getattr(self, "in_place", False) and self._fresh:
            shutil.rmtree(self.out, ignore_errors=True)
        elif getattr(self, "in_place", False) and not self._had_study:
            for name in KEEP:
                (self.out / name).unlink(missing_ok=True)
        remove_made(self._made)

    def __enter__(self) -> PlanBuild:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_plan_dir(result: PlanResult, out_dir: str | os.PathLike, *, command: str | None = None,
                   ds_overrides: dict[str, Any] | None = None) -> Path:
    """Write every file of the plan into ``out_dir`` (replacing an older plan there) and return its path.

    An older plan's study (``study.db``) is carried over into the new directory.

    Args:
        result: what ``pptune.planner.plan`` returned.
        out_dir: the plan directory.
        command: the command line that made the plan (recorded in plan.json, launch.sh and HOW_TO_RUN.md).
        ds_overrides: dotted ds_config.json keys to set (``{"optimizer.params.lr": 3e-4}``).

    Raises:
        ConfigError: ``out_dir`` exists and is not a plan directory, or cannot be written.
    """
    with PlanBuild(out_dir, study=False) as build:
        write_plan_files(result, build.staged, command=command, ds_overrides=ds_overrides)
        return build.commit()
