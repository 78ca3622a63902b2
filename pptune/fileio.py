"""Small shared I/O helpers: atomic file writes, the one output-path check every writing command makes first, and the host's CPU name."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` through a temporary file in the same folder, then rename: readers never see half a file.

    A killed writer leaves at most a hidden ``.<name>.*`` temporary, never a truncated ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented JSON with a final newline, written atomically."""
    return write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (``platform.processor()`` where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _writable(directory: Path) -> bool:
    """True when this process may create and rename entries in ``directory`` (effective ids, capabilities included)."""
    effective = os.access in os.supports_effective_ids
    return os.access(directory, os.W_OK | os.X_OK, effective_ids=effective)


def check_output_path(path: str | os.PathLike, *, kind: str = "file", flag: str = "--out",
                      replaced: bool = False) -> Path:
    """Refuse, before any work, an output path pptune could not write; return it as a Path.

    The one check every command that writes calls first, so a bad output path is one line (exit 2) instead
    of a traceback after minutes of work. It refuses a path below a regular file, an existing directory where
    a file is wanted (and a file where a directory is), and a directory this process may not write in
    (read-only mode, read-only file system; checked with the effective ids, so root without
    CAP_DAC_OVERRIDE is refused too). Missing folders are fine: the writer creates them.

    Args:
        path: the file or directory the command will write.
        kind: ``"file"`` (written through a temporary file and a rename in its folder) or ``"directory"``
            (files are written into it).
        flag: the option that named the path, for the message (``-o``, ``--out``, ``PLAN_DIR``).
        replaced: a directory replaced as one unit (built beside it, then renamed): its folder must be
            writable too.

    Raises:
        ConfigError: the path cannot be written, with the reason.
    """
    from pptune.errors import ConfigError

    if kind not in ("file", "directory"):
        raise ValueError(f"kind must be 'file' or 'directory', got {kind!r}")
    p = Path(path)
    where = f"{flag} {p}" if flag else str(p)
    if str(p) == "" or p.name in ("", ".", ".."):
        if kind == "file" or replaced:
            raise ConfigError(f"{where}: not a usable {kind} name")
    full = Path(os.path.abspath(p))
    if full.exists():
        if kind == "file" and full.is_dir():
            raise ConfigError(f"{where}: is a directory; give a file path")
        if kind == "file" and not full.is_file():
            raise ConfigError(f"{where}: exists and is not a regular file")
        if kind == "directory" and not full.is_dir():
            raise ConfigError(f"{where}: exists and is not a directory")
        if kind == "directory" and not _writable(full):
            raise ConfigError(f"{where}: cannot write in this directory (permission denied or read-only)")
        if kind == "directory" and not replaced:
            return p
    elif full.is_symlink():
        raise ConfigError(f"{where}: is a dangling symbolic link")
    folder = full.parent
    while not folder.exists():
        if folder.is_symlink():
            raise ConfigError(f"{where}: {folder} is a dangling symbolic link")
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{where}: {folder} is a file, not a directory")
    if not _writable(folder):
        raise ConfigError(f"{where}: cannot write in {folder} (permission denied or read-only)")
    return p


def make_parents(path: Path) -> list[Path]:
    """Create the missing folders above ``path``; return them, outermost first (``remove_made`` undoes it)."""
    made = []
    folder = Path(os.path.abspath(path)).parent
    while not folder.exists():
        made.append(folder)
        folder = folder.parent
    made.reverse()
    for folder in made:
        folder.mkdir(exist_ok=True)
    return made


def remove_made(made: list[Path]) -> None:
    """Remove the folders ``make_parents`` created, innermost first, where they are still empty."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:
            break


def replace_dir(staged: Path, out: Path) -> Path:
    """Rename the directory ``staged`` to ``out`` as one unit, replacing an existing ``out`` (deleted after).

    Ctrl-C and SIGTERM wait until both renames ran, so ``out`` is never missing because of them; a SIGKILL
    between the renames leaves the old directory as a hidden ``.<name>.old-*`` beside it.
    """
    staged.chmod(0o755)
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(staged, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staged, out)
    finally:
        if main:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    return out
