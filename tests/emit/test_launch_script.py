"""launch.sh over several nodes (emit/launch.py): run once per node with NNODES/NODE_RANK/MASTER_ADDR, two agents here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pptune.cli import main
from pptune.runtime.measured import load_measured
from pptune.runtime.nodes import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_launch_sh_runs_once_per_node(tmp_path, capsys):
    plan = tmp_path / "plan"
    assert main(["plan", "gpt:layers=2,hidden=64,heads=2,vocab=128,seq=32", "--cluster", "local-cpu", "--gpus", "2",
                 "--global-batch-size", "4", "--pp", "2", "--dtype", "fp32", "--no-figures", "--no-progress",
                 "--out", str(plan)]) == 0
    capsys.readouterr()
    text = (plan / "launch.sh").read_text()
    assert "NNODES" in text and "### Several nodes" in (plan / "HOW_TO_RUN.md").read_text()
    port = free_port()
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1", "PPTUNE_PIN_CPU": "0", "NNODES": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    procs = [subprocess.Popen([str(plan / "launch.sh"), "--steps", "2", "--warmup", "1"], env={**env, "NODE_RANK": r},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in ("1", "0")]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    measured = load_measured(plan / "measured.json")
    assert sorted(r.rank for r in measured.ranks) == [0, 1] and len(measured.step_times_ms) == 2
    assert json.loads((plan / "plan.json").read_text())["config"]["pp"] == measured.pp == 2
