"""Pareto front: predicted throughput against peak memory over every configuration the search evaluated.

The question: what did the search find, and what does memory headroom buy? Points come from the plan's
ranking.csv (one row per distinct configuration the study evaluated). A feasible point is on the front when
no other feasible point has at least its tokens/s with at most its peak memory and beats it in one of them.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pptune.errors import SchemaError


@dataclass(frozen=True, kw_only=True, slots=True)
class ParetoPoint:
    """One evaluated configuration."""

    label: str
    pp: int
    tokens_per_s: float
    peak_memory_gib: float
    feasible: bool
    on_front: bool
    chosen: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class ParetoChart:
    points: tuple[ParetoPoint, ...]  # estimated configurations only
    front: tuple[ParetoPoint, ...]  # by peak memory, ascending
    rejected: int  # configurations the cost model refused (no estimate to place)
    memory_limit_gib: float
    chosen_label: str


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the non-dominated (tokens/s up, memory down) points among ``points`` = [(tokens, memory)].

    A point is on the front when it has the least memory among points of equal tokens/s and less memory
    than every strictly faster point; exact duplicates of a front point are on it too.
    """
    by_tokens: dict[float, list[int]] = {}
    for i, (tokens, _) in enumerate(points):
        by_tokens.setdefault(tokens, []).append(i)
    front: set[int] = set()
    faster_min = math.inf  # least memory among strictly faster points
    for tokens in sorted(by_tokens, reverse=True):
        group = by_tokens[tokens]
        least = min(points[i][1] for i in group)
        if least < faster_min:
            front.update(i for i in group if points[i][1] == least)
        faster_min = min(faster_min, least)
    return front


def read_ranking(path: str | os.PathLike) -> list[dict[str, str]]:
    """ranking.csv rows as dicts of strings (SchemaError when missing or without the needed columns)."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read ranking ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise SchemaError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise SchemaError(f"{path}: not a CSV file ({exc})") from None
    need = {"label", "pp", "tokens_per_s", "peak_memory_gib", "feasible"}
    if rows and not need <= set(rows[0]):
        raise SchemaError(f"{path}: missing columns {sorted(need - set(rows[0]))}")
    if not rows:  # pptune plan writes at least the chosen configuration
        raise SchemaError(f"{path}: no configurations (a truncated file?); rerun 'pptune plan' to rewrite it")
    for number, row in enumerate(rows, start=1):
        if None in row or None in row.values():  # DictReader's marks of a row longer or shorter than the header
            raise SchemaError(f"{path}: row {number} does not have the header's fields (a truncated file?); "
                              "rerun 'pptune plan' to rewrite it")
    return rows


def _number(value: object) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return x


def _truth(value: object) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def pareto_series(rows: Iterable[Mapping[str, object]], *, chosen_label: str, memory_limit_gib: float) -> ParetoChart:
    """Place every estimated configuration and mark the front among the feasible ones.

    Args:
        rows: ranking rows (``read_ranking`` or ``PlanResult.ranking.to_dict("records")``).
        chosen_label: the plan's configuration label.
        memory_limit_gib: the GPU's memory.
    """
    placed, rejected = [], 0
    for row in rows:
        tokens, mem = _number(row.get("tokens_per_s")), _number(row.get("peak_memory_gib"))
        if not (math.isfinite(tokens) and math.isfinite(mem)) or (tokens <= 0 and not _truth(row.get("feasible"))):
            rejected += 1
            continue
        placed.append((str(row["label"]), int(_number(row.get("pp"))), tokens, mem, _truth(row.get("feasible"))))
    feasible = [i for i, p in enumerate(placed) if p[4]]
    on_front = {feasible[k] for k in pareto_front([(placed[i][2], placed[i][3]) for i in feasible])}
    points = tuple(
        ParetoPoint(label=label, pp=pp, tokens_per_s=tokens, peak_memory_gib=mem, feasible=fits,
                    on_front=i in on_front, chosen=label == chosen_label)
        for i, (label, pp, tokens, mem, fits) in enumerate(placed)
    )
    front = tuple(sorted((p for p in points if p.on_front), key=lambda p: (p.peak_memory_gib, -p.tokens_per_s)))
    return ParetoChart(points=points, front=front, rejected=rejected, memory_limit_gib=memory_limit_gib,
                       chosen_label=chosen_label)
