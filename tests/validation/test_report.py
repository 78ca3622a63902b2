"""The validation report from synthetic records: scoring, leave-one-out calibration, CSV columns, summary.md, printed lines."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from pptune.calibrate.local_fit import LocalConstants, Sample, calibrated_cluster, predict_ms
from pptune.testing.profiles import TINY
from pptune.testing.records import record
from pptune.validation.grid import cluster_for, local_grid
from pptune.validation.local import LocalSettings, LocalValidation, calibrate_records, score
from pptune.validation.report import FIRST_COLUMNS, csv_text, print_lines, write_report
from pptune.validation.summary import summary_markdown


def _records(profile, cluster):
    constants = LocalConstants(compute_scale=1.2, per_microbatch_overhead_ms=1.0, per_step_overhead_ms=5.0)
    out = []
    for config in local_grid(global_batch_size=4):  # the pp 2 x tp 2 correctness row needs 4 GPUs: cluster_for
        truth = calibrated_cluster(cluster_for(cluster, config), constants)
        ms = predict_ms(Sample(label="", profile=profile, config=config, measured_ms=1.0), truth)
        out.append(record(profile, cluster_for(cluster, config), config, measured_ms=ms))
    out.append(record(profile, cluster, local_grid(global_batch_size=2, data_parallel=False)[0], measured_ms=None))
    return tuple(out)


def _validation(profile, cluster) -> LocalValidation:
    records = _records(profile, cluster)
    calibrated, fit = calibrate_records(records, profile, cluster, command="pptune validate --local")
    preds = [p if p is not None else r.predicted_ms for p, r in zip(calibrated, records, strict=True)]
    return LocalValidation(settings=LocalSettings(model=TINY, global_batch_size=4), profile=profile,
                           profile_label="profile.json", cluster=cluster, records=records, before=score(records),
                           calibrated_ms=calibrated, after=score(records, preds), fit_all=fit, load_start=0.5,
                           load_end=0.7, seconds=60.0)


def test_scores_before_and_after_leave_one_out_calibration(profile, cluster) -> None:
    v = _validation(profile, cluster)
    # neither the failed run nor the oversubscribed pp 2 x tp 2 correctness run is scored
    assert v.before.count == v.after.count == len(v.records) - 2
    assert [r.config.world_size for r, cal in zip(v.records, v.calibrated_ms, strict=True) if cal is None] == [4, 2]
    assert v.before.median_abs_error > 0.1  # the overheads and the slower compute were not in the model
    assert v.after.max_abs_error < 0.01 and v.after.spearman == pytest.approx(1.0)
    assert v.calibrated_ms[-1] is None
    assert v.fit_all.constants.compute_scale == pytest.approx(1.2, rel=1e-3)


def test_csv_summary_and_lines(tmp_path: Path, profile, cluster) -> None:
    v = _validation(profile, cluster)
    rows = list(csv.DictReader(io.StringIO(csv_text(v))))
    assert tuple(list(rows[0])[:len(FIRST_COLUMNS)]) == FIRST_COLUMNS
    assert len(rows) == len(v.records)
    ok = rows[0]
    assert float(ok["error"]) == pytest.approx((float(ok["predicted_ms"]) - float(ok["measured_ms"])) / float(ok["measured_ms"]),
                                               rel=1e-4)
    assert "pred_compute_ms" in ok and ok["failure"] == ""
    assert rows[-1]["measured_ms"] == "" and rows[-1]["failure"] == "training failed"
    text = summary_markdown(v, command="pptune validate --local")
    assert "`pptune validate --local`" in text and "lscpu" in text and "leave-one-out" in text
    assert "Calculon" in text and "failed: training failed" in text
    assert text.count("4 processes on 2 cores: correctness only, not scored") == 1
    lines = print_lines(v)
    assert lines[0].startswith("uncalibrated: median |error|") and "Spearman" in lines[0]
    assert lines[1].startswith("calibrated (leave-one-out)") and "1 of" in lines[2]
    paths = write_report(v, tmp_path, command="pptune validate --local", summary_text=text)
    assert {p.name for p in paths} == {"validation.csv", "predicted_vs_measured.png", "bubble_vs_microbatches.png",
                                       "predicted_vs_measured_calibrated.png", "summary.md"}


def test_host_speed_is_reported_and_scales_the_predictions(profile, cluster) -> None:
    import dataclasses

    from pptune.validation.local import _at_profile_speed

    v = _validation(profile, cluster)
    ratios = [0.9 + 0.2 * i / len(v.records) for i in range(len(v.records))]
    records = tuple(dataclasses.replace(r, host_ratio=k) for r, k in zip(v.records, ratios, strict=True))
    scaled = _at_profile_speed(records)
    # a run the host slowed by x1.05 is scored against its prediction x1.05
    assert scaled == score(records, [r.predicted_ms * r.host_ratio for r in records])
    assert scaled.count == v.before.count and scaled.median_abs_error != v.before.median_abs_error
    assert _at_profile_speed(v.records) is None  # not probed: no such figure
    text = summary_markdown(dataclasses.replace(v, records=records, profile_host_ms=(81.0, 79.5),
                                                at_profile_speed=scaled), command="pptune validate --local")
    assert "81.0 ms before and 79.5 ms after the profile" in text and "x0.90 to x" in text
    assert "## Uncalibrated, at the profile's host speed" in text and "| 0.90 |" in text
    assert "at the profile's host speed" not in summary_markdown(v, command="x")


def test_a_profile_measured_at_tp_is_named(profile, cluster) -> None:
    import dataclasses

    v = _validation(profile, cluster)
    assert "one rank at tp 2" in summary_markdown(dataclasses.replace(v, tp_profiles={2: profile}), command="x")
    assert "one rank at tp" not in summary_markdown(v, command="x")
