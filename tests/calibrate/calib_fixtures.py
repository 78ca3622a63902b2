"""Helpers for the calibration tests: the published CSV beside the checkout and small synthetic files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pptune.calibrate.published import COLUMNS

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "a100_megatron_single_node.csv"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="shared/data not beside the checkout")


def write_csv(path: Path, rows: list[list[object]], *, bom: bool = True) -> Path:
    """A published-format CSV (with the UTF-8 byte-order mark the real file has)."""
    text = ",".join(COLUMNS) + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


# Real rows of the published file (gpus, gbs, mbs, h, heads, layers, seq, tp, dp, pp, ms): one per layout family.
SAMPLE_ROWS = [
    [2, 16, 8, 1024, 16, 24, 1024, 1, 1, 2, 372.160408],
    [8, 32, 4, 1024, 16, 24, 1024, 2, 2, 2, 219.732754],
    [4, 16, 4, 2048, 16, 24, 1024, 1, 2, 2, 410.490577],
    [8, 8, 2, 2048, 16, 20, 1024, 4, 1, 2, 160.6027],
]
