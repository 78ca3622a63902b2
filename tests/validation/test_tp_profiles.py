"""A profile measured at tp 2 prices the grid's tp 2 rows; the tp 1 rows keep the tp 1 profile."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pptune.cost.estimate import estimate
from pptune.parallel import ParallelConfig
from pptune.testing.profiles import TINY, small_profile
from pptune.validation.local import samples_of
from pptune.validation.run import predict_records

TP2 = ParallelConfig(tp=2, pp=1, dp=1, micro_batch_size=2, num_microbatches=2, dtype="fp32")
TP1 = ParallelConfig(tp=1, pp=1, dp=2, micro_batch_size=2, num_microbatches=1, dtype="fp32")


@pytest.fixture
def tp2_profile():
    """One rank of tp 2 as measured: blocks at 0.65 of the tp 1 time, not the 0.5 re-sharding assumes."""
    return dataclasses.replace(small_profile(block_ms=1.3), tp=2)


def test_each_row_is_estimated_and_written_with_its_own_profile(tmp_path, profile, cluster, tp2_profile) -> None:
    records = predict_records([TP1, TP2], profile=profile, cluster=cluster, model=TINY, spec=None,
                              profile_label="p.json", runs_dir=tmp_path, tp_profiles={2: tp2_profile},
                              tp_profile_labels={2: "p_tp2.json"})
    assert records[0].predicted_ms == estimate(profile, cluster, TP1).step_time_ms
    assert records[1].predicted_ms == estimate(tp2_profile, cluster, TP2).step_time_ms
    assert records[1].predicted_ms != estimate(profile, cluster, TP2).step_time_ms  # not the re-sharded tp 1 one
    written = [json.loads((tmp_path / name / "plan.json").read_text()) for name in ("pp1-dp2-mbs2-m1-nopipe",
                                                                                    "tp2-pp1-dp1-mbs2-m2-nopipe")]
    assert [w["estimate"]["step_time_ms"] for w in written] == [r.predicted_ms for r in records]
    assert [w["profile"] for w in written] == ["p.json", "p_tp2.json"]
    measured = tuple(dataclasses.replace(r, measured_ms=100.0) for r in records)
    assert [s.profile.tp for s in samples_of(measured, profile, {2: tp2_profile})] == [1, 2]  # calibration alike
