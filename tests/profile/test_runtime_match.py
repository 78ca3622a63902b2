"""A plan trains in its measured profile's dtype unless told otherwise, and says how its run differs from the profile."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pptune.cli import main
from pptune.profile.runtime_match import default_dtype, runtime_mismatches
from pptune.profile.schema import load_profile, save_profile
from pptune.runtime.threads import CPU_THREADS_PER_RANK

TINY = "gpt:layers=2,hidden=64,heads=2,vocab=128,seq=32"
PLAN = ["--cluster", "local-cpu", "--gpus", "2", "--global-batch-size", "4", "--pp", "2", "--no-progress",
        "--no-figures"]


@pytest.fixture(scope="module")
def fp32_profile(tmp_path_factory):
    """A real fp32 CPU profile, timed by `pptune profile` with its default threads."""
    out = tmp_path_factory.mktemp("prof") / "tiny.json"
    assert main(["profile", TINY, "--micro-batch-sizes", "1,2", "--repeat", "1", "--no-progress", "-o", str(out)]) == 0
    return out


def test_profile_on_cpu_is_timed_with_the_threads_of_a_rank(fp32_profile):
    profile = load_profile(fp32_profile)
    assert profile.device == "cpu" and profile.threads == CPU_THREADS_PER_RANK
    assert runtime_mismatches(profile, dtype="fp32", origin="p") == []


def test_default_dtype():
    assert default_dtype(TINY, None) == "bf16"  # analytic: large-model training's precision
    assert default_dtype(TINY, "fp16") == "fp16"


def test_plan_takes_the_profile_dtype_and_names_an_explicit_mismatch(fp32_profile, tmp_path, capsys):
    assert default_dtype(str(fp32_profile), None) == "fp32"
    assert main(["plan", str(fp32_profile), *PLAN, "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "plan.json").read_text())["config"]["dtype"] == "fp32"
    assert "note:" not in capsys.readouterr().err
    assert main(["plan", str(fp32_profile), *PLAN, "--dtype", "bf16", "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pptune plan: note:") and "timed in fp32" in err[0]
    assert json.loads((tmp_path / "b" / "plan.json").read_text())["config"]["dtype"] == "bf16"
    assert "timed in fp32 but the plan trains in bf16" in (tmp_path / "b" / "HOW_TO_RUN.md").read_text()


def test_a_profile_timed_with_other_threads_says_so(fp32_profile, tmp_path, capsys):
    other = tmp_path / "two.json"
    save_profile(dataclasses.replace(load_profile(fp32_profile), threads=CPU_THREADS_PER_RANK + 1), other)
    lines = runtime_mismatches(load_profile(other), dtype="fp32", origin="two.json")
    assert len(lines) == 1 and f"timed with {CPU_THREADS_PER_RANK + 1} CPU threads" in lines[0]
    assert main(["plan", str(other), *PLAN, "--out", str(tmp_path / "p")]) == 0
    assert "CPU threads" in capsys.readouterr().err


def test_estimate_takes_the_profile_dtype(fp32_profile, capsys):
    base = ["estimate", str(fp32_profile), "--cluster", "local-cpu", "--pp", "2", "--global-batch-size", "4",
            "--json"]
    runs = {}
    for dtype in (None, "fp32", "bf16"):
        assert main(base + ([] if dtype is None else ["--dtype", dtype])) == 0
        out = capsys.readouterr()
        runs[dtype] = json.loads(out.out)["memory_per_stage_bytes"], out.err
    assert runs[None] == runs["fp32"] and runs[None][1] == ""
    assert runs["bf16"][0] != runs["fp32"][0] and runs["bf16"][1].startswith("pptune estimate: note:")


def test_estimate_batch_line_without_dtype_takes_the_profile_dtype(fp32_profile, tmp_path, capsys):
    lines = tmp_path / "b.jsonl"
    lines.write_text('{"pp": 2}\n{"pp": 2, "dtype": "fp32"}\n{"pp": 2, "dtype": "bf16"}\n')
    assert main(["estimate", str(fp32_profile), "--cluster", "local-cpu", "--global-batch-size", "4",
                 "--batch", str(lines)]) == 0
    got = [json.loads(line)["memory_per_stage_bytes"] for line in capsys.readouterr().out.splitlines()]
    assert got[0] == got[1] != got[2]
