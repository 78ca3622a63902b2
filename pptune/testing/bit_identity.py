"""Every result of a bulk cost-model run as JSON values with floats in hex, and the count of values two runs differ in.

``benchmarks/check_bulk_identical.py`` dumps the 175B planning spaces with two revisions and compares them: speed work
on the cost model must not move a prediction by one bit.
"""

from __future__ import annotations

import dataclasses

from pptune.testing.large_space import bulk_inputs


def dump(target: str) -> list:
    """Every result of the space as JSON-able values (floats as their hex form, so equality is bitwise)."""
    from pptune.cost.bulk import estimate_many

    cluster, configs, profiles = bulk_inputs(target)
    out = []
    for r in estimate_many(profiles, cluster, configs):
        if isinstance(r, Exception):
            out.append(["error", str(r)])
            continue
        row = {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name != "breakdown"}
        row.update({f"breakdown.{k}": v for k, v in r.breakdown.to_dict().items()})
        out.append({k: v.hex() if isinstance(v, float) else v for k, v in row.items()})
    return out


def compare(old: list, new: list) -> tuple[int, float]:
    """(values that differ, largest relative difference of a differing float; inf for a non-float difference)."""
    differ, worst = 0, 0.0
    for a, b in zip(old, new, strict=True):
        if not isinstance(a, dict) or not isinstance(b, dict):
            differ += a != b
            worst = max(worst, float("inf") if a != b else 0.0)
            continue
        for key, x in a.items():
            y = b[key]
            if x == y:
                continue
            differ += 1
            if isinstance(x, str) and x.startswith(("0x", "-0x")) and isinstance(y, str):
                fx, fy = float.fromhex(x), float.fromhex(y)
                worst = max(worst, abs(fx - fy) / max(abs(fx), 1e-300))
            else:
                worst = float("inf")
    return differ, worst
