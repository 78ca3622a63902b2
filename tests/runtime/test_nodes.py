"""Several nodes on this host: two torchrun agents (static rendezvous), rank 0's measured.json holds every rank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pptune.errors import ConfigError
from pptune.runtime.launch import run_plan
from pptune.runtime.measured import load_measured
from pptune.runtime.nodes import Host, check_world, free_port, parse_endpoint, read_hostfile, rendezvous_from
from pptune.runtime.timers import FORWARD

ROOT = Path(__file__).resolve().parents[2]


def test_read_hostfile_follows_deepspeeds_format(tmp_path):
    f = tmp_path / "hostfile"
    f.write_text("# nodes\nworker-1 slots=8\n\n  worker-2 slots=8  # second\n")
    assert read_hostfile(f) == (Host(name="worker-1", slots=8), Host(name="worker-2", slots=8))
    for text, message in [("a slots=2\na slots=2\n", "listed twice"), ("a 2\n", "expected '<host> slots=<n>'"),
                          ("# none\n", "no '<host> slots=<n>' line"), ("a slots=0\n", "need at least 1")]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=message):
            read_hostfile(f)
    with pytest.raises(ConfigError, match="needs 4 processes"):
        check_world((Host(name="a", slots=1),), 4)
    with pytest.raises(ConfigError, match="same slots"):
        check_world((Host(name="a", slots=1), Host(name="b", slots=3)), 4)


def test_rendezvous_flags():
    assert rendezvous_from(None, None, None) is None
    r = rendezvous_from(2, 1, "node0:29500")
    assert r is not None and r.torchrun_args() == ["--nnodes", "2", "--node-rank", "1", "--master-addr", "node0",
                                                   "--master-port", "29500"]
    assert parse_endpoint("[::1]:7") == ("::1", 7)
    for args, message in [((2, None, "a:1"), "needs all of"), ((2, 2, "a:1"), "--node-rank < --nnodes"),
                          ((2, 0, "a"), "HOST:PORT")]:
        with pytest.raises(ConfigError, match=message):
            rendezvous_from(*args)


def _check_every_rank(plan: Path) -> None:
    measured = load_measured(plan / "measured.json")
    assert measured.world_size == 2 and sorted(r.rank for r in measured.ranks) == [0, 1]
    assert sorted(r.stage for r in measured.ranks) == [0, 1]  # node 0 holds stage 0, node 1 stage 1
    for rank in measured.ranks:  # node 1's rank sent its own timers to rank 0
        assert rank.timers[FORWARD].per_step_ms > 0 and rank.timers[FORWARD].calls_per_step == 4  # gas 4
    assert len(measured.step_times_ms) == 2


def test_two_agents_from_a_hostfile(make_plan, tmp_path):
    plan = make_plan("hosts", pp=2)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")  # two names of this host: two agents here
    measured = run_plan(plan, steps=2, warmup=1, timeout_s=300, hostfile=hostfile)
    assert measured is not None
    _check_every_rank(plan)
    assert (plan / "measure.log.node1").exists()


def test_two_measure_commands_with_a_rendezvous(make_plan):
    """What SLURM runs: ``pptune measure`` once per node with --nnodes/--node-rank/--rdzv-endpoint."""
    plan = make_plan("rdzv", pp=2)
    port = free_port()
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT), "PPTUNE_PIN_CPU": "0"}
    procs = [subprocess.Popen([sys.executable, "-m", "pptune", "measure", str(plan), "--steps", "2", "--warmup", "1",
                               "--nnodes", "2", "--node-rank", str(rank), "--rdzv-endpoint", f"127.0.0.1:{port}",
                               "--log", str(plan / f"node{rank}.log"), "--timeout", "300"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for rank in (1, 0)]  # node 1 first: it waits for node 0's rendezvous
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "node 1 of 2 finished" in outs[0] and "step time: median" in outs[1]
    _check_every_rank(plan)


def test_measure_refuses_a_bad_hostfile_before_launching(make_plan, tmp_path, capsys):
    from pptune.cli import main

    plan = make_plan("bad", pp=2)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("a slots=1\n")
    assert main(["measure", str(plan), "--hostfile", str(hostfile)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "needs 2 processes" in out.err and out.err.count("\n") == 1
    assert not (plan / "measure.log").exists()
