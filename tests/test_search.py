"""plan(): exhaustive vs TPE on the real cost model, determinism, ranking order, infeasible requests, storage and resume."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest

from pptune.cost.types import Breakdown, Estimate
from pptune.errors import ConfigError, InfeasibleError
from pptune.hardware import load_cluster
from pptune.model.spec import PRESETS
from pptune.parallel import ParallelConfig
from pptune.planner import Evaluator, PlanSettings, build_space, plan
from pptune.planner.study import trial_config
from pptune.profile.analytic import analytic_profile
from pptune.profile.schema import save_profile

SMALL = dict(cluster="a100-80g", gpus=8, global_batch_size=32)
MODEL = "gpt2-small"


@pytest.fixture(scope="module")
def exhaustive():
    return plan(MODEL, settings=PlanSettings(exhaustive=True), **SMALL)


def test_exhaustive_evaluates_the_whole_space_and_ranks_it(exhaustive):
    r = exhaustive
    assert len(r.ranking) == r.space.size() == r.evaluations
    assert r.study is None and r.settings.method == "exhaustive"
    top = r.ranking.iloc[0]
    assert top["label"].startswith(r.best.label()) and bool(top["feasible"])
    assert top["tokens_per_s"] == pytest.approx(r.estimate.tokens_per_s)
    feasible = r.ranking[r.ranking["feasible"]]
    assert feasible["tokens_per_s"].is_monotonic_decreasing
    assert list(r.ranking["rank"]) == list(range(1, len(r.ranking) + 1))
    assert r.estimate.peak_memory_bytes <= r.cluster.gpu.memory_bytes
    # no feasible configuration beats the recommendation
    assert r.estimate.tokens_per_s == pytest.approx(feasible["tokens_per_s"].max())


def test_tpe_reaches_the_exhaustive_best(exhaustive):
    r = plan(MODEL, settings=PlanSettings(trials=80, seed=0), **SMALL)
    regret = 1 - r.estimate.tokens_per_s / exhaustive.estimate.tokens_per_s
    assert regret <= 0.02
    assert r.settings.method == "tpe" and r.evaluations == 80
    assert len(r.ranking) <= 80 + 3 * max(sum(1 for _ in r.space.configs_for(lay)) for lay in r.space.layouts)


def test_polish_ranks_every_configuration_of_the_best_layouts(exhaustive):
    # 6 trials cannot try every micro-batch size / ZeRO / recompute / split of a layout; the polish does.
    rough = plan(MODEL, settings=PlanSettings(trials=6, seed=0, polish=False), **SMALL)
    r = plan(MODEL, settings=PlanSettings(trials=6, seed=0), **SMALL)
    assert r.evaluations == rough.evaluations == 6 and len(r.ranking) > len(rough.ranking)
    layout = {c for c in r.space.configs() if (c.tp, c.pp, c.dp) == (r.best.tp, r.best.pp, r.best.dp)}
    ranked = set(r.ranking["label"])
    assert {c.label() for c in layout} <= ranked
    ex = exhaustive.ranking
    in_layout = ex[(ex.tp == r.best.tp) & (ex.pp == r.best.pp) & (ex.dp == r.best.dp) & ex.feasible]
    assert r.estimate.tokens_per_s == pytest.approx(in_layout["tokens_per_s"].max())  # the layout's exact best
    assert r.estimate.tokens_per_s >= rough.estimate.tokens_per_s


def test_same_seed_same_result():
    a = plan(MODEL, settings=PlanSettings(trials=40, seed=3), **SMALL)
    b = plan(MODEL, settings=PlanSettings(trials=40, seed=3), **SMALL)
    assert a.best == b.best
    pd.testing.assert_frame_equal(a.ranking, b.ranking)


def test_pareto_marks_a_non_dominated_front():
    r = plan(MODEL, settings=PlanSettings(trials=60, seed=0, objective="pareto"), **SMALL)
    assert r.settings.method == "nsga2" and "pareto" in r.ranking
    front = r.ranking[r.ranking["pareto"]]
    feasible = r.ranking[r.ranking["feasible"]]
    assert len(front) >= 1
    for _, p in front.iterrows():
        better = feasible[(feasible["tokens_per_s"] >= p["tokens_per_s"]) & (feasible["peak_memory_gib"] <= p["peak_memory_gib"])
                          & ((feasible["tokens_per_s"] > p["tokens_per_s"]) | (feasible["peak_memory_gib"] < p["peak_memory_gib"]))]
        assert better.empty, p["label"]
    assert r.best.label() in front.iloc[0]["label"]


def _fake_estimate(profile, cluster, config: ParallelConfig) -> Estimate:
    """Known optimum: tokens/s grows with micro-batch size and pp; pp >= 4 needs more memory than the GPU has."""
    tokens = 1000.0 * config.micro_batch_size + 10.0 * config.pp - config.zero_stage
    peak = int((90 if config.pp >= 4 else 10) * 2**30)
    fits = peak <= cluster.gpu.memory_bytes
    step = 1e3 * config.global_batch_size * 1024 / tokens
    return Estimate(
        step_time_ms=step, breakdown=Breakdown(compute_ms=step, bubble_ms=0, pp_comm_ms=0, tp_comm_ms=0, dp_comm_ms=0,
                                               optimizer_ms=0),
        samples_per_s=tokens / 1024, tokens_per_s=tokens, tflops_per_gpu=1.0, mfu=0.1, bubble_fraction=0.0,
        peak_memory_bytes=peak, memory_per_stage_bytes=(peak,) * config.pp, feasible=fits,
        infeasible_reason=None if fits else "stage 0 needs 90.0 GiB", stages=(), boundaries=(0, 14),
    )


def test_injected_estimate_and_memory_infeasible_points_stay_ranked():
    r = plan(MODEL, settings=PlanSettings(exhaustive=True), estimate_fn=_fake_estimate, **SMALL)
    assert (r.best.micro_batch_size, r.best.pp, r.best.zero_stage) == (16, 2, 0)
    infeasible = r.ranking[~r.ranking["feasible"]]
    assert len(infeasible) > 0 and (infeasible["pp"] >= 4).all()
    assert (infeasible["infeasible_reason"] == "stage 0 needs 90.0 GiB").all()
    # infeasible rows rank after every feasible one, even when their tokens/s is higher
    assert r.ranking["feasible"].tolist() == sorted(r.ranking["feasible"].tolist(), reverse=True)
    assert infeasible["tokens_per_s"].max() > r.estimate.tokens_per_s


def test_optuna_sees_memory_as_a_constraint():
    r = plan(MODEL, settings=PlanSettings(trials=30, seed=1), estimate_fn=_fake_estimate, **SMALL)
    trials = r.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    for t in trials:
        config = ParallelConfig(**t.user_attrs["config"])
        violation = t.constraints["peak_memory_over_gib"]
        assert (violation > 0) == (config.pp >= 4)


def test_every_sampled_configuration_is_in_the_space():
    space = build_space(num_blocks=24, gpus=16, gpus_per_node=8, global_batch_size=64, num_heads=16,
                        target="megatron", zero_bubble=True)
    valid = set(space.configs())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(300):
        trial = study.ask()
        config = trial_config(space, trial)
        assert config in valid, config
        seen.add(config)
        study.tell(trial, 0.0)
    assert len(seen) > 100 and {c.schedule for c in seen} == {"1f1b", "interleaved_1f1b", "zb_h1"}


def test_no_configuration_fits_names_the_closest():
    with pytest.raises(InfeasibleError) as info:
        plan("gpt3-175b", cluster="a100-80g", gpus=8, global_batch_size=64, settings=PlanSettings(trials=20))
    text = str(info.value)
    assert "lowest peak memory found:" in text and "the GPU (A100-SXM4-80GB) has 80 GiB" in text
    assert "full recompute" in text and "mbs=1" in text and "\n" not in text


@pytest.mark.parametrize(("kw", "message"), [
    (dict(storage="definitely-not-a-url"), "cannot open it as an Optuna RDB storage"),
    (dict(storage="sqlite:////nonexistent-dir/x/study.db"), "cannot open it as an Optuna RDB storage"),
    (dict(gpus=12), "12 GPUs do not fill whole nodes of 8"),
    (dict(gpus=64, global_batch_size=1), "global batch 1 is smaller than the smallest data-parallel size 2"),
])
def test_bad_requests_raise_one_line(kw, message):
    problem = {**SMALL, **{k: v for k, v in kw.items() if k in SMALL}}
    settings = PlanSettings(trials=5, **{k: v for k, v in kw.items() if k not in SMALL})
    with pytest.raises(ConfigError, match=message) as info:
        plan(MODEL, settings=settings, **problem)
    assert "\n" not in str(info.value)


def test_stored_study_needs_resume_and_resume_keeps_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = plan(MODEL, settings=PlanSettings(trials=15, seed=0, storage=url), **SMALL)
    before = {t.number: t.params for t in first.study.trials}
    with pytest.raises(ConfigError, match="--resume"):
        plan(MODEL, settings=PlanSettings(trials=15, seed=0, storage=url), **SMALL)
    again = plan(MODEL, settings=PlanSettings(trials=25, seed=0, storage=url, resume=True), **SMALL)
    after = {t.number: t.params for t in again.study.trials}
    assert len(after) == 25 and all(after[n] == p for n, p in before.items())
    assert again.evaluations == 25
    with pytest.raises(ConfigError, match="use the same --objective"):
        plan(MODEL, settings=PlanSettings(trials=5, storage=url, resume=True, objective="pareto",
                                          study_name=first.settings.study_name), **SMALL)


def test_a_profile_file_plans_like_its_model(tmp_path):
    cluster = load_cluster("a100-80g", num_gpus=8)
    path = save_profile(analytic_profile(PRESETS[MODEL], cluster.gpu, micro_batch_sizes=(1, 2, 4, 8)), tmp_path / "p.json")
    r = plan(str(path), settings=PlanSettings(exhaustive=True, max_micro_batch_size=8), **SMALL)
    assert r.model.profile_path == str(path) and r.model.spec == PRESETS[MODEL]
    assert r.model.profile_label(r.cluster) == str(path)
    assert r.best.world_size == 8


def test_evaluator_caches_per_config_and_profile_per_tp():
    calls = {"profile": 0, "estimate": 0}

    def profile_for_tp(tp):
        calls["profile"] += 1
        return object()

    def est(profile, cluster, config):
        calls["estimate"] += 1
        return _fake_estimate(profile, cluster, config)

    ev = Evaluator(profile_for_tp=profile_for_tp, cluster=load_cluster("a100-80g", num_gpus=8), estimate_fn=est)
    a = ParallelConfig(tp=2, pp=2, dp=2)
    assert ev(a) is ev(a)
    ev(a.replace(micro_batch_size=2, num_microbatches=1))
    ev(a.replace(tp=1, dp=4))
    assert calls == {"profile": 2, "estimate": 3}


def test_a_measured_profile_is_planned_at_its_own_tp_unless_tp_is_pinned(tmp_path) -> None:
    import dataclasses

    from pptune.hardware import load_cluster
    from pptune.model.spec import parse_spec
    from pptune.planner import Fixed, PlanSettings, plan
    from pptune.profile.analytic import analytic_profile
    from pptune.profile.schema import save_profile

    spec = parse_spec("gpt:layers=4,hidden=256,heads=4,seq=64,vocab=512")
    measured = dataclasses.replace(analytic_profile(spec, load_cluster("a100-80g").gpu), source="measured")
    path = str(save_profile(measured, tmp_path / "measured.json"))
    free = plan(path, cluster="a100-80g", gpus=8, global_batch_size=32,
                settings=PlanSettings(exhaustive=True, dtype="bf16"))
    assert set(free.ranking["tp"]) == {1}
    pinned = plan(path, cluster="a100-80g", gpus=8, global_batch_size=32,
                  settings=PlanSettings(exhaustive=True, dtype="bf16", fixed=Fixed(tp=2)))
    assert set(pinned.ranking["tp"]) == {2}
