"""The plan's terminal ranking table keeps its columns aligned whatever the labels' lengths (type: splits)."""

from __future__ import annotations

import pandas as pd

from pptune.planner.ranking import format_table


def _row(rank: int, label: str) -> dict:
    return {"rank": rank, "label": label, "tokens_per_s": 160827.0, "step_time_ms": 19559.7, "bubble_fraction": 0.169,
            "peak_memory_gib": 64.2, "mfu": 0.535, "feasible": True, "infeasible_reason": None}


def test_long_partition_labels_keep_the_columns_aligned():
    short = "tp4 pp16 dp16 mbs1 m96 1f1b z0 none balanced"
    long = "tp4 pp16 dp16 mbs1 m96 1f1b z0 none type:TransformerBlockPipe"
    lines = format_table(pd.DataFrame([_row(1, short), _row(2, long), _row(3, short)])).splitlines()
    header, rows = lines[0], lines[1:]
    where = header.index("tokens/s") + len("tokens/s")  # right edge of the first number column
    for line in rows:
        assert line[where - len("160,827"):where] == "160,827", line
    assert len({len(line) for line in rows}) == 1  # every row as wide as the others
