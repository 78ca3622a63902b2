"""Check that two cost-model results agree: estimate_many()'s summaries against estimate()'s."""

from __future__ import annotations

import dataclasses
import math

REL = 1e-9  # what the bulk tests allow (tests/cost/test_bulk.py: "within 1e-9 relative")


def assert_same_summary(got, ref, config, *, rel: float = REL) -> None:
    """``got`` (an estimate_many result) equals ``ref`` (``estimate(...).summary()``) field by field, within ``rel``."""
    label = config.label()
    for field in ("step_time_ms", "samples_per_s", "tokens_per_s", "tflops_per_gpu", "mfu", "bubble_fraction"):
        assert math.isclose(getattr(got, field), getattr(ref, field), rel_tol=rel, abs_tol=1e-12), (field, label)
    for field, value in dataclasses.asdict(ref.breakdown).items():
        assert math.isclose(getattr(got.breakdown, field), value, rel_tol=rel, abs_tol=1e-9), (field, label)
    assert math.isclose(got.breakdown.step_ms, got.step_time_ms, rel_tol=rel)
    assert got.memory_per_stage_bytes == ref.memory_per_stage_bytes, label
    assert (got.peak_memory_bytes, got.feasible, got.infeasible_reason) == \
        (ref.peak_memory_bytes, ref.feasible, ref.infeasible_reason), label
    assert got.boundaries == ref.boundaries, label
