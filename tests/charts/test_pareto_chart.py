"""Pareto series: the front is exactly the non-dominated feasible set; ranking.csv rows are read and placed."""

from __future__ import annotations

import csv
import random

import pytest

from pptune.charts.pareto import pareto_front, pareto_series, read_ranking
from pptune.errors import SchemaError


def _dominated(i: int, points: list[tuple[float, float]]) -> bool:
    t, m = points[i]
    return any(tj >= t and mj <= m and (tj > t or mj < m) for tj, mj in points)


@pytest.mark.parametrize("seed", range(5))
def test_front_is_the_non_dominated_set(seed):
    rng = random.Random(seed)
    # Coarse values so that ties and exact duplicates occur.
    points = [(float(rng.randint(1, 20)), float(rng.randint(1, 20))) for _ in range(60)]
    front = pareto_front(points)
    assert front == {i for i in range(len(points)) if not _dominated(i, points)}


def _row(label: str, pp: int, tokens: float, mem: float, feasible: bool) -> dict[str, object]:
    return {"label": label, "pp": pp, "tokens_per_s": tokens, "peak_memory_gib": mem, "feasible": feasible}


def test_series_marks_front_chosen_and_rejected():
    rows = [
        _row("a", 1, 100.0, 10.0, True),
        _row("b", 2, 150.0, 20.0, True),   # front
        _row("c", 2, 120.0, 30.0, True),   # dominated by b
        _row("d", 4, 300.0, 90.0, False),  # faster but does not fit: never on the front
        _row("e", 4, 150.0, 20.0, True),   # duplicate of b: on the front too
        {"label": "f", "pp": 4, "tokens_per_s": 0.0, "peak_memory_gib": "", "feasible": "False"},  # rejected
    ]
    chart = pareto_series(rows, chosen_label="b", memory_limit_gib=80.0)
    by = {p.label: p for p in chart.points}
    assert set(by) == {"a", "b", "c", "d", "e"} and chart.rejected == 1
    assert [p.label for p in chart.front] == ["a", "b", "e"]
    assert by["b"].chosen and not by["a"].chosen
    assert not by["d"].on_front and not by["d"].feasible
    assert chart.memory_limit_gib == 80.0


def test_read_ranking_round_trip(tmp_path):
    path = tmp_path / "ranking.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["rank", "label", "pp", "tokens_per_s", "peak_memory_gib", "feasible"])
        writer.writeheader()
        writer.writerow({"rank": 1, "label": "x", "pp": 2, "tokens_per_s": 5.5, "peak_memory_gib": 1.5, "feasible": True})
    rows = read_ranking(path)
    chart = pareto_series(rows, chosen_label="x", memory_limit_gib=2.0)
    assert chart.points[0].tokens_per_s == 5.5 and chart.points[0].feasible and chart.points[0].on_front
    path.write_text("label,pp\nx,2\n")
    with pytest.raises(SchemaError, match="missing columns"):
        read_ranking(path)
    with pytest.raises(SchemaError, match="cannot read"):
        read_ranking(tmp_path / "absent.csv")
