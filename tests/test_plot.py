"""Smoke test of the drawing layer, `pptune plot` and `pptune plan`'s figures: every chart is written, PNG and SVG."""

from __future__ import annotations

import csv
import json

import pytest

from pptune.cli import main
from pptune.cost.estimate import estimate
from pptune.errors import ConfigError
from pptune.hardware import GPU, Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import LayerProfile, LayerTiming, Profile, save_profile

FIGURES = {"bubble", "mbs", "timeline", "balance", "pareto"}


def _profile() -> Profile:
    def layer(i: int, role: str, k: float) -> LayerProfile:
        timings = tuple(LayerTiming(micro_batch_size=b, fwd_ms=k * b, bwd_ms=2 * k * b, saved_bytes=2**24 * b,
                                    output_bytes=2**16 * b) for b in (1, 2))
        return LayerProfile(index=i, name=f"{role}.{i}", kind=role, role=role, param_count=10**6, param_bytes=2 * 10**6,
                            timings=timings)

    roles = [("embedding", 0.2)] + [("block", 1.0)] * 6 + [("head", 1.5)]
    return Profile(model="tiny", source="measured", device="cpu", device_name="test", dtype="fp32", seq_len=64,
                   micro_batch_sizes=(1, 2), layers=tuple(layer(i, r, k) for i, (r, k) in enumerate(roles)))


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    """A two-stage plan in the planner's format: plan.json, ranking.csv and the profile it names."""
    root = tmp_path_factory.mktemp("plan")
    profile = _profile()
    gpu = GPU(name="TestGPU", peak_bf16_tflops=10.0, peak_fp16_tflops=10.0, peak_fp32_tflops=10.0, memory_gib=1.2,
              hbm_gbps=100.0)
    cluster = Cluster(name="test-2", gpu=gpu, gpus_per_node=2, num_nodes=1, intra_node_gbps=10.0, inter_node_gbps=10.0,
                      intra_node_latency_us=10.0, inter_node_latency_us=10.0)
    config = ParallelConfig(pp=2, num_microbatches=4, dtype="fp32", partition="balanced")
    path = save_profile(profile, root / "tiny.json")
    plan = {"command": "test", "model": {"name": "tiny", "source": str(path)}, "cluster": cluster.to_dict(),
            "global_batch_size": 4, "config": config.to_dict(),
            "estimate": estimate(profile, cluster, config).to_json_dict(),
            "search": {"space": {"micro_batch_sizes": [1, 2]}}}
    (root / "plan.json").write_text(json.dumps(plan))
    with (root / "ranking.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["label", "pp", "tokens_per_s", "peak_memory_gib", "feasible"])
        writer.writeheader()
        for c in (config, config.replace(micro_batch_size=2, num_microbatches=2), config.replace(partition="uniform")):
            e = estimate(profile, cluster, c)
            writer.writerow({"label": c.label(), "pp": 2, "tokens_per_s": e.tokens_per_s,
                             "peak_memory_gib": e.peak_memory_bytes / 2**30, "feasible": e.feasible})
    return root


def test_every_figure_is_written(plan_dir):
    from pptune.draw.plan import draw_plan_figures

    paths = draw_plan_figures(plan_dir)
    assert {p.stem for p in paths} == FIGURES
    for p in paths:
        assert p.parent == plan_dir / "figures" and p.suffix == ".png"
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    assert not list((plan_dir / "figures").glob(".*tmp"))  # temporary files renamed away


def test_cli_draws_svg_and_prints_the_paths(plan_dir, capsys):
    assert main(["plot", str(plan_dir), "--format", "svg"]) == 0
    printed = capsys.readouterr().out.split()
    assert {p.rsplit("/", 1)[-1] for p in printed} == {f"{n}.svg" for n in FIGURES}
    assert all((plan_dir / "figures" / f"{n}.svg").read_text().lstrip().startswith("<?xml") for n in FIGURES)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plan.json" in err


def test_bad_format_is_a_config_error(plan_dir):
    from pptune.draw.plan import draw_plan_figures

    with pytest.raises(ConfigError, match="png, svg"):
        draw_plan_figures(plan_dir, fmt="jpg")


def test_plan_command_draws_the_figures(tmp_path, capsys):
    profile = save_profile(_profile(), tmp_path / "tiny.json")
    out = tmp_path / "plan"
    argv = ["plan", str(profile), "--cluster", "local-cpu", "--gpus", "2", "--global-batch-size", "4", "--dtype", "fp32",
            "--exhaustive", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    assert {p.name for p in (out / "figures").iterdir()} == {f"{n}.png" for n in FIGURES}
    assert main([*argv, "--no-figures"]) == 0 and not (out / "figures").exists()  # a fresh plan directory
