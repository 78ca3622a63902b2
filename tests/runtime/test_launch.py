"""Launcher failure handling: crash, timeout (workers in their own sessions killed), out of memory, stale output."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pptune.errors import RunError
from pptune.runtime import launch
from pptune.runtime.launch import failure_reason, run_plan, train_command, worker_env


def _fake_train(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """Make run_plan launch ``python -c code`` instead of torchrun (the handling under test is the same)."""
    monkeypatch.setattr(launch, "train_command", lambda *a, **k: [sys.executable, "-c", textwrap.dedent(code)])


def test_train_command_and_env(plan_dir: Path) -> None:
    cmd = train_command(plan_dir, nproc=2, steps=5, warmup=1, out=plan_dir / "m.json", ds_timers=True)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nnodes"]
    assert cmd[cmd.index("--nproc_per_node") + 1] == "2"
    assert cmd[cmd.index("-m", 2) + 1] == "pptune.runtime.train" and cmd[-1] == "--ds-timers"
    env = worker_env()
    assert env["OMP_NUM_THREADS"] == "1"
    assert str(Path(launch.__file__).resolve().parents[2]) in env["PYTHONPATH"].split(os.pathsep)


def test_crash_raises_with_log_and_removes_stale_output(plan_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (plan_dir / "measured.json").write_text("{}")  # stale result of an earlier run
    _fake_train(monkeypatch, """
        import sys
        print("[rank1]: ValueError: shapes do not match", flush=True)
        sys.exit(3)
    """)
    log = plan_dir / "logs" / "run.log"
    with pytest.raises(RunError) as info:
        run_plan(plan_dir, steps=1, warmup=0, timeout_s=60, log_path=log)
    message = str(info.value)
    assert "exit code 3" in message and "ValueError: shapes do not match" in message and str(log) in message
    assert "\n" not in message
    assert not (plan_dir / "measured.json").exists()
    assert "ValueError" in log.read_text()


def test_out_of_memory_is_named(plan_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_train(monkeypatch, """
        import sys
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
        sys.exit(1)
    """)
    with pytest.raises(RunError, match="out of memory; log: "):
        run_plan(plan_dir, steps=1, warmup=0, timeout_s=60)


def test_success_without_output_is_an_error(plan_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_train(monkeypatch, "print('done')")
    with pytest.raises(RunError, match="exited 0 but wrote no measured.json"):
        run_plan(plan_dir, steps=1, warmup=0, timeout_s=60)


def test_timeout_kills_launcher_and_workers(plan_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pids = tmp_path / "pids"
    # Like torchrun: the launcher starts a worker in a new session, so killing the launcher's group misses it.
    _fake_train(monkeypatch, f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(120)
    """)
    monkeypatch.setattr(launch, "GRACE_S", 2.0)
    start = time.monotonic()
    with pytest.raises(RunError, match=r"timed out after 3 s and was stopped; log: "):
        run_plan(plan_dir, steps=1, warmup=0, timeout_s=3)
    assert time.monotonic() - start < 30
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 5
        while launch._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not launch._alive(pid), f"process {pid} survived the timeout"
    assert not (plan_dir / "measured.json").exists()


def test_failure_reason() -> None:
    assert failure_reason("...\nRuntimeError: CUDA out of memory\n") == "out of memory"
    assert "SIGKILL" in failure_reason("  exitcode  : -9 (pid: 12)\n")
    log = "[rank0]: pptune error: world size 1 != plan's pp 2\n[rank0]: ValueError: later\n"
    assert failure_reason(log) == "world size 1 != plan's pp 2"
    log = "[rank1]: AssertionError: bwd_microstep timer has already been started\n" \
          "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
    assert failure_reason(log) == "AssertionError: bwd_microstep timer has already been started"
    assert failure_reason("") == "no error line found"
    # torchrun's summary names no cause: the reason is the last line a worker printed, or the signal it died of.
    summary = "=====\nRoot Cause (first observed failure):\n[0]:\n  time      : 2026\n  exitcode  : 1 (pid: 7)\n"
    assert failure_reason("$ torchrun ...\nstep 3 done\n" + summary) == "no error line found; last output: step 3 done"
    assert failure_reason(summary.replace(": 1 (", ": -11 (")) == "a worker died of SIGSEGV (no Python error was printed)"
    log = "[rank0]: torch.distributed.DistNetworkError: port in use\n"
    assert failure_reason(log) == "torch.distributed.DistNetworkError: port in use"
    # The crashed rank's error, not its peer's "Connection closed by peer" that comes later in the log.
    log = ("[rank0]: RuntimeError: element 0 of tensors does not require grad\n"
           "[rank1]: RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1\n")
    assert failure_reason(log) == "RuntimeError: element 0 of tensors does not require grad"


@pytest.mark.slow
def test_real_plan_error_reaches_the_message(plan_dir: Path) -> None:
    # One process for a 2-stage plan: the real entry point reports the mismatch on one line and exits non-zero.
    with pytest.raises(RunError) as info:
        run_plan(plan_dir, nproc=1, steps=1, warmup=0, timeout_s=240)
    assert "world size 1 != plan's pp 2 * tp 1 * dp 1 = 2" in str(info.value)
    assert str(plan_dir / "measure.log") in str(info.value)
    assert not (plan_dir / "measured.json").exists()
