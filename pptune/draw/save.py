"""Writing a figure: matplotlib's Agg backend (the CLI, CI and notebooks all write files), a temporary file, a rename."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display

from matplotlib.figure import Figure  # noqa: E402

from pptune.errors import ConfigError  # noqa: E402

FORMATS = ("png", "svg")


def save_figure(fig: Figure, path: str | os.PathLike, *, fmt: str = "png", dpi: int = 130, tight: bool = False) -> Path:
    """Write ``fig`` as ``fmt`` to ``path`` via a temporary file and a rename (``tight``: crop to the drawn area)."""
    if fmt not in FORMATS:
        raise ConfigError(f"figure format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight" if tight else None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
