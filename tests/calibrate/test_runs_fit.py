"""runs_fit: a noisy set of runs made by the cost model with known constants gives those constants back; what the
runs cannot identify is kept fixed and said; nothing identifiable is refused."""

from __future__ import annotations

import random

import pytest

from pptune.calibrate.runs_fit import Run, apply_constants, fit_runs, leave_one_out, predict_run, start_values
from pptune.commands.calibrate import batch_defaults
from pptune.errors import ConfigError
from pptune.hardware import load_cluster

BASE = load_cluster("a100-80g")
MODEL = "gpt:layers=24,hidden=2048,heads=16"
TRUTH = {**start_values(BASE), "compute_efficiency": 0.9, "inter_node_efficiency": 0.6,
         "per_microbatch_overhead_ms": 5.0}
# tp, pp, dp, micro batch, global batch: 8-32 GPUs, so most data-parallel groups cross nodes (tp 8: one rank per
# node, on its own GPU's share of the node's NICs; tp 1 and 2 rings use several NICs, comm.dp_link)
CONFIGS = [(1, 1, 8, 4, 256), (2, 1, 8, 4, 256), (1, 2, 16, 2, 256), (2, 2, 8, 2, 512), (8, 1, 4, 1, 8),
           (4, 2, 4, 1, 128), (1, 4, 8, 1, 256), (2, 1, 16, 1, 16)]


def item(tp: int, pp: int, dp: int, mbs: int, gbs: int) -> dict:
    return {**batch_defaults(), "model": MODEL, "cluster": BASE, "tp": tp, "pp": pp, "dp": dp, "micro_batch_size": mbs,
            "global_batch_size": gbs, "partition": "uniform", "dtype": "bf16"}


def synthetic(configs, truth: dict, *, noise: float, seed: int = 7) -> list[Run]:
    rng = random.Random(seed)
    runs = []
    for c in configs:
        probe = Run(label=str(c), item=item(*c), measured_step_ms=1.0)
        ms = predict_run(probe, truth).step_time_ms * (1 + rng.gauss(0, noise))
        runs.append(Run(label=str(c), item=item(*c), measured_step_ms=ms))
    return runs


def test_fit_recovers_known_constants_from_noisy_synthetic_runs() -> None:
    runs = synthetic(CONFIGS, TRUTH, noise=0.01)
    fit = fit_runs(runs)
    assert set(fit.fitted) >= {"compute_efficiency", "inter_node_efficiency", "per_microbatch_overhead_ms"}
    assert fit.values["compute_efficiency"] == pytest.approx(0.9, abs=0.03)
    assert fit.values["inter_node_efficiency"] == pytest.approx(0.6, abs=0.06)
    assert fit.values["per_microbatch_overhead_ms"] == pytest.approx(5.0, abs=1.5)
    assert max(abs(e) for e in fit.errors_before) > 0.08  # the base cluster was clearly off
    assert max(abs(e) for e in fit.errors_after) < 0.04


def test_written_constants_predict_what_the_fit_predicted() -> None:
    run = synthetic(CONFIGS[:1], TRUTH, noise=0.0)[0]
    calibrated = apply_constants(BASE, TRUTH)
    direct = predict_run(run, TRUTH).step_time_ms
    through_cluster = predict_run(Run(label="", item={**run.item, "cluster": calibrated}, measured_step_ms=1.0))
    assert through_cluster.step_time_ms == pytest.approx(direct, rel=1e-9)
    assert calibrated.calibration["compute_scale"] == pytest.approx(1 / 0.9)


def test_single_node_runs_keep_inter_node_efficiency_fixed_and_say_why() -> None:
    single = [(1, 1, 8, 4, 256), (2, 1, 4, 4, 256), (1, 2, 4, 2, 256), (2, 2, 2, 2, 512), (8, 1, 1, 1, 64)]
    fit = fit_runs(synthetic(single, TRUTH, noise=0.005))
    assert "inter_node_efficiency" not in fit.fitted
    assert fit.values["inter_node_efficiency"] == 1.0
    assert "no run spans nodes" in fit.fixed["inter_node_efficiency"]
    assert "inter-node bus efficiency kept at x1.000" in fit.describe()


def test_few_runs_fit_fewer_constants_than_runs() -> None:
    runs = synthetic(CONFIGS[:3], TRUTH, noise=0.0)
    fit = fit_runs(runs)
    assert len(fit.fitted) == 2 and fit.fitted[0] == "compute_efficiency"
    assert any("3 runs fit at most 2 constants" in why for why in fit.fixed.values())
    assert len(fit_runs(runs[:1]).fitted) == 1


def test_nothing_identifiable_is_refused() -> None:
    single = synthetic([(1, 1, 8, 4, 256), (2, 1, 4, 4, 256)], TRUTH, noise=0.0)
    with pytest.raises(ConfigError, match="identify none of the constants.*no run spans nodes"):
        fit_runs(single, fixed=("compute_efficiency", "per_microbatch_overhead_ms", "intra_node_efficiency"))


def test_leave_one_out_predicts_each_run_from_the_others() -> None:
    runs = synthetic(CONFIGS[:4], TRUTH, noise=0.0)
    held = leave_one_out(runs)
    assert len(held) == 4 and all(h is not None and abs(h) < 0.1 for h in held)
    with pytest.raises(ConfigError, match="at least 2"):
        leave_one_out(runs[:1])


def test_a_measured_profile_takes_the_compute_efficiency_as_its_compute_scale(tmp_path) -> None:
    from pptune.profile.schema import save_profile
    from pptune.testing.profiles import small_profile

    path = save_profile(small_profile(), tmp_path / "p.json")  # a measured profile: its times are taken as they are
    cpu = load_cluster("local-cpu")

    def local(dp: int, mbs: int, gbs: int) -> dict:
        return {**batch_defaults(), "model": str(path), "cluster": cpu, "dp": dp, "micro_batch_size": mbs,
                "global_batch_size": gbs, "dtype": "fp32"}

    truth = {**start_values(cpu), "compute_efficiency": 0.8}
    runs = [Run(label=str(c), item=local(*c), measured_step_ms=predict_run(
        Run(label="", item=local(*c), measured_step_ms=1.0), truth).step_time_ms) for c in ((1, 4, 8), (2, 2, 8), (1, 1, 8))]
    fit = fit_runs(runs)
    assert fit.fitted[0] == "compute_efficiency"
    assert fit.values["compute_efficiency"] == pytest.approx(0.8, abs=0.02)


def test_one_run_the_model_gets_badly_wrong_barely_moves_the_fit() -> None:
    import dataclasses

    runs = synthetic(CONFIGS, TRUTH, noise=0.005)
    runs[0] = dataclasses.replace(runs[0], measured_step_ms=runs[0].measured_step_ms * 1.6)  # a run disturbed
    fit = fit_runs(runs)
    assert fit.values["compute_efficiency"] == pytest.approx(0.9, abs=0.04)
    assert fit.errors_after[0] < -0.25  # the disturbed run stays far off instead of dragging the others
    assert max(abs(e) for e in fit.errors_after[1:]) < 0.06
