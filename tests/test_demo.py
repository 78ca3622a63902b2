"""The embedded default job end to end on a tiny model: profile, plan, emit, draw, and a whole output directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pptune.cli import main
from pptune.demo import run_demo
from pptune.profile.schema import load_profile

TINY = "gpt:layers=2,hidden=64,heads=2,seq=64,vocab=256,name=tiny"


def test_demo_writes_profile_plan_and_figures(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", model=TINY, seq_len=64, repeat=2, progress=False)
    assert load_profile(result.profile_path).source == "measured"
    for name in ("ds_config.json", "pipeline.json", "plan.json", "launch.sh", "megatron_args.txt", "ranking.csv"):
        assert (result.plan_dir / name).is_file(), name
    ds = json.loads((result.plan_dir / "ds_config.json").read_text())
    assert ds["train_batch_size"] == 32
    assert {f.stem for f in result.figures} >= {"bubble", "mbs", "timeline", "balance", "pareto"}
    assert "recommended:" in result.summary
    assert not list(tmp_path.glob(".demo.tmp-*"))  # the temporary directory was renamed into place


def test_demo_bad_model_exits_2_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", "gpt:layers=2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing hidden=" in err[0]
    assert not out.exists() and not list(tmp_path.iterdir())
