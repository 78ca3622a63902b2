"""Local calibration: recovers known constants from synthetic runs, keeps overheads non-negative, predicts held-out runs."""

from __future__ import annotations

import pytest

from pptune.calibrate.local_fit import (
    LocalConstants,
    Sample,
    calibrated_cluster,
    cluster_compute_scale,
    fit_local,
    leave_one_out,
    predict_ms,
    scaled_profile,
)
from pptune.cost.estimate import estimate
from pptune.errors import ConfigError
from pptune.hardware import load_cluster
from pptune.parallel import ParallelConfig
from pptune.testing.profiles import small_profile
from pptune.validation.grid import correctness_only, local_grid


@pytest.fixture
def profile():
    return small_profile()


@pytest.fixture
def cluster():
    return load_cluster("local-cpu")


TRUE = LocalConstants(compute_scale=1.25, per_microbatch_overhead_ms=0.8, per_step_overhead_ms=12.0)


def _samples(profile, cluster, constants: LocalConstants = TRUE) -> list[Sample]:
    truth = calibrated_cluster(cluster, constants)
    out = []
    for config in local_grid(global_batch_size=8):
        if correctness_only(config):  # the 4-process pp 2 x tp 2 row is never fitted
            continue
        measured = predict_ms(Sample(label="", profile=profile, config=config, measured_ms=1.0), truth)
        out.append(Sample(label=config.label(), profile=profile, config=config, measured_ms=measured))
    return out


def test_scaled_profile_scales_times_only() -> None:
    p = small_profile()
    q = scaled_profile(p, 2.0)
    assert q.layers[1].timings[0].fwd_ms == 2 * p.layers[1].timings[0].fwd_ms
    assert q.layers[1].timings[0].bwd_ms == 2 * p.layers[1].timings[0].bwd_ms
    assert q.layers[1].timings[0].saved_bytes == p.layers[1].timings[0].saved_bytes
    assert scaled_profile(p, 1.0) is p


def test_calibrated_cluster_carries_constants(cluster) -> None:
    c = calibrated_cluster(cluster, LocalConstants(compute_scale=1.1, per_microbatch_overhead_ms=0.5,
                                                   per_step_overhead_ms=3.0, latency_multiple=2.0,
                                                   bandwidth_multiple=0.5), provenance={"command": "x"})
    assert (c.per_microbatch_overhead_ms, c.per_step_overhead_ms) == (0.5, 3.0)
    assert c.intra_node_latency_us == 2 * cluster.intra_node_latency_us
    assert c.intra_node_gbps == 0.5 * cluster.intra_node_gbps
    assert cluster_compute_scale(c) == 1.1 and c.calibration["local_fit"]["command"] == "x"
    assert cluster_compute_scale(cluster) == 1.0


def test_fit_recovers_known_constants(profile, cluster) -> None:
    samples = _samples(profile, cluster)
    fit = fit_local(samples, cluster)
    k = fit.constants
    assert k.compute_scale == pytest.approx(1.25, rel=1e-3)
    assert k.per_microbatch_overhead_ms == pytest.approx(0.8, rel=1e-2)
    assert k.per_step_overhead_ms == pytest.approx(12.0, rel=1e-2)
    assert (k.latency_multiple, k.bandwidth_multiple) == (1.0, 1.0)
    assert max(abs(e) for e in fit.errors_after) < 1e-3
    assert min(abs(e) for e in fit.errors_before) > 0.05  # the uncalibrated model was off on every run


def test_overheads_stay_non_negative(profile, cluster) -> None:
    # Runs faster than the profile says: the fit lowers the compute scale, never makes an overhead negative.
    samples = _samples(profile, cluster, LocalConstants(compute_scale=0.8))
    fit = fit_local(samples, cluster, fit_links=False)
    assert fit.constants.per_microbatch_overhead_ms >= 0 and fit.constants.per_step_overhead_ms >= 0
    assert fit.constants.compute_scale == pytest.approx(0.8, rel=1e-3)


def test_leave_one_out_predicts_unseen_runs(profile, cluster) -> None:
    samples = _samples(profile, cluster)[:5]
    held_out = leave_one_out(samples, cluster, fit_links=False)
    for s, p in zip(samples, held_out, strict=True):
        assert p == pytest.approx(s.measured_ms, rel=1e-3)
    with pytest.raises(ConfigError, match="at least 3"):
        leave_one_out(samples[:2], cluster)


def test_fit_needs_two_positive_runs(profile, cluster) -> None:
    config = ParallelConfig(pp=2, micro_batch_size=1, num_microbatches=8, dtype="fp32")
    one = Sample(label="a", profile=profile, config=config, measured_ms=estimate(profile, cluster, config).step_time_ms)
    with pytest.raises(ConfigError, match="at least 2"):
        fit_local([one], cluster)
    with pytest.raises(ConfigError, match="positive"):
        fit_local([one, Sample(label="b", profile=profile, config=config, measured_ms=0.0)], cluster)
