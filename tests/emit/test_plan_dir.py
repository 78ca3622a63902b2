"""write_plan_dir: every file of a plan, consistent with the estimate, readable by the runtime, written atomically."""

from __future__ import annotations

import json
import stat
import subprocess

import pytest

from pptune.cost.partition import stage_boundaries
from pptune.emit.megatron import check_megatron_args, parse_args_text
from pptune.emit.megatron_deepspeed import check_megatron_deepspeed_args
from pptune.emit.plan_dir import write_plan_dir
from pptune.errors import ConfigError
from pptune.planner import Fixed, PlanSettings, plan
from pptune.runtime.plan_files import load_run_plan

SMALL = dict(cluster="a100-80g", gpus=8, global_batch_size=32)


@pytest.fixture(scope="module")
def balanced():
    """pp=2 with pptune's time-balanced split: no DeepSpeed partition_method reproduces it."""
    return plan("gpt2-small", settings=PlanSettings(exhaustive=True, fixed=Fixed(tp=1, pp=2, partition="balanced")), **SMALL)


@pytest.fixture(scope="module")
def by_params():
    fixed = Fixed(tp=2, pp=4, partition="parameters", zero_stage=1)
    return plan("gpt2-small", settings=PlanSettings(exhaustive=True, fixed=fixed), **SMALL)


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_plan_directory_contents(tmp_path, by_params):
    out = write_plan_dir(by_params, tmp_path / "plan", command="pptune plan gpt2-small ...")
    names = set(_files(out))
    assert names == {"plan.json", "ds_config.json", "pipeline.json", "launch.sh", "hostfile.example",
                     "megatron_args.txt", "megatron_deepspeed_args.txt", "ranking.csv", "HOW_TO_RUN.md"}
    assert out.joinpath("launch.sh").stat().st_mode & stat.S_IXUSR
    subprocess.run(["bash", "-n", str(out / "launch.sh")], check=True)
    launch = (out / "launch.sh").read_text()
    assert "deepspeed --num_nodes 1 --num_gpus 8" in launch and "--module pptune.runtime.train" in launch
    assert "your_train.py" in launch  # how to use one's own script with the same config
    c, e = by_params.best, by_params.estimate
    pipe = json.loads((out / "pipeline.json").read_text())
    assert pipe["partition_method"] == "parameters" and pipe["num_stages"] == 4 == c.pp
    assert pipe["topology"] == {"pp": 4, "tp": 2, "dp": 1}
    assert pipe["boundaries"] == list(e.boundaries) == list(stage_boundaries(by_params.profile, c))
    assert [len(s) for s in pipe["stage_layers"]] == [b - a for a, b in zip(e.boundaries, e.boundaries[1:], strict=False)]
    plan_json = json.loads((out / "plan.json").read_text())
    assert plan_json["config"] == c.to_dict() and plan_json["estimate"]["step_time_ms"] == e.step_time_ms
    assert plan_json["profile"] == "analytic:A100-SXM4-80GB" and plan_json["cluster"]["name"] == "a100-80g"
    assert plan_json["search"]["method"] == "exhaustive" and plan_json["pptune_version"]
    check_megatron_args(parse_args_text((out / "megatron_args.txt").read_text()), world_size=8)
    # tp 2 on DeepSpeed: Megatron-DeepSpeed's pretrain_gpt.py flags, consistent with ds_config.json
    mds = parse_args_text((out / "megatron_deepspeed_args.txt").read_text())
    check_megatron_deepspeed_args(mds, world_size=8, ds_config=json.loads((out / "ds_config.json").read_text()))
    assert " ".join(mds).startswith("--deepspeed --deepspeed_config ds_config.json --tensor-model-parallel-size 2 "
                                    "--pipeline-model-parallel-size 4")
    assert "GPTModelPipe splits the layers type:transformer" in (out / "megatron_deepspeed_args.txt").read_text()
    # the runtime reads the same directory
    run = load_run_plan(out)
    assert (run.pp, run.tp, run.dp, run.partition_method) == (4, 2, 1, "parameters")
    assert run.boundaries == e.boundaries and run.micro_batch_size == c.micro_batch_size
    assert run.predicted_step_ms == pytest.approx(e.step_time_ms) and run.engine == "pipeline"


def test_balanced_split_is_explicit(tmp_path, balanced):
    out = write_plan_dir(balanced, tmp_path / "plan")
    pipe = json.loads((out / "pipeline.json").read_text())
    assert pipe["partition_method"] == "explicit" and pipe["planned_partition"] == "balanced"
    assert pipe["boundaries"] == list(balanced.estimate.boundaries)
    howto = (out / "HOW_TO_RUN.md").read_text()
    assert "ExplicitPipelineModule" in howto and str(pipe["boundaries"]) in howto
    run = load_run_plan(out)
    assert run.partition_method == "explicit" and run.boundaries == balanced.estimate.boundaries
    assert ("checkpointable_layers" in howto) == (balanced.best.recompute_interval > 0)


def test_recompute_plan_tells_how_to_keep_the_embedding_out(tmp_path):
    result = plan("gpt2-small", settings=PlanSettings(exhaustive=True, fixed=Fixed(tp=1, pp=2, recompute="full")), **SMALL)
    out = write_plan_dir(result, tmp_path / "plan")
    assert json.loads((out / "pipeline.json").read_text())["activation_checkpoint_interval"] == 1
    assert 'checkpointable_layers=["TransformerBlockPipe"]' in (out / "HOW_TO_RUN.md").read_text()


def test_rewrite_is_byte_identical_and_replaces_atomically(tmp_path, by_params):
    out = tmp_path / "plan"
    write_plan_dir(by_params, out, command="x")
    first = _files(out)
    (out / "study.db").write_bytes(b"study")  # the Optuna store survives a rewrite
    (out / "stale.txt").write_text("old plan")
    write_plan_dir(by_params, out, command="x")
    second = _files(out)
    assert second.pop("study.db") == b"study" and "stale.txt" not in second
    assert second == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]  # no .tmp-/.old- leftovers


def test_failed_write_leaves_the_old_plan(tmp_path, by_params, monkeypatch):
    out = write_plan_dir(by_params, tmp_path / "plan")
    before = _files(out)

    def broken(result):
        raise RuntimeError("disk full")

    monkeypatch.setattr("pptune.emit.plan_dir.ranking_csv", broken)
    with pytest.raises(RuntimeError):
        write_plan_dir(by_params, out)
    assert _files(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["plan"]


def test_refuses_a_foreign_directory(tmp_path, by_params):
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not a pptune plan directory"):
        write_plan_dir(by_params, foreign)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_megatron_plan_directory(tmp_path):
    fixed = Fixed(tp=2, pp=4, schedule="interleaved_1f1b", vpp=3, partition="uniform", sequence_parallel=True)
    r = plan("gpt2-small", cluster="a100-80g", gpus=16, global_batch_size=64,
             settings=PlanSettings(exhaustive=True, target="megatron", fixed=fixed))
    out = write_plan_dir(r, tmp_path / "plan")
    assert not (out / "ds_config.json").exists()
    args = parse_args_text((out / "megatron_args.txt").read_text())
    check_megatron_args(args, world_size=16)
    text = " ".join(args)
    assert "--pipeline-model-parallel-size 4" in text and "--sequence-parallel" in text
    # "uniform" for Megatron is DeepSpeed's type:<block> split, which is Megatron's own default: 12 blocks over
    # 4 ranks x 3 virtual stages is one block per chunk, no layout or first/last flags needed
    assert "--num-layers-per-virtual-pipeline-stage 1" in text
    assert "--pipeline-model-parallel-layout" not in text and "--decoder-first-pipeline-num-layers" not in text
    launch = (out / "launch.sh").read_text()
    assert "torchrun" in launch and "pretrain_gpt.py" in launch and "CUDA_DEVICE_MAX_CONNECTIONS=1" in launch
    subprocess.run(["bash", "-n", str(out / "launch.sh")], check=True)
    pipe = json.loads((out / "pipeline.json").read_text())
    assert pipe["vpp"] == 3 and len(pipe["boundaries"]) == 4 * 3 + 1


def test_a_killed_build_is_cleaned_up_by_the_next_one(tmp_path, by_params):
    """A SIGKILL while drawing leaves a hidden .OUT.tmp-* beside OUT; the next build of OUT removes it if its
    process is gone, and leaves a build whose process still runs (or that is not pptune's) alone."""
    import os
    import sys

    from pptune.emit.plan_dir import OWNER_FILE

    out = tmp_path / "plan"
    write_plan_dir(by_params, out)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # a pid that has exited
    stale, running, foreign = (tmp_path / f".plan.tmp-{name}" for name in ("stale", "running", "foreign"))
    for path, owner in ((stale, dead), (running, str(os.getpid())), (foreign, None)):
        path.mkdir()
        (path / "plan.json").write_text("{}")
        if owner is not None:
            (path / OWNER_FILE).write_text(owner)
    write_plan_dir(by_params, out)
    assert not stale.exists() and running.exists() and foreign.exists()
    assert OWNER_FILE not in {p.name for p in out.iterdir()}
