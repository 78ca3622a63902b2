"""Launch ``pptune.runtime.train`` on this machine with torchrun, bounded in time, and load what it measured.

``torchrun --standalone`` serves its rendezvous store on a free port and hands that port to the workers as
MASTER_PORT, so concurrent runs on one machine do not collide. torchrun starts every worker in its own session
(torch/distributed/elastic/multiprocessing/subprocess_handler), so on timeout the launcher signals torchrun's
process group *and* each worker by pid, SIGTERM first and SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from pptune.errors import RunError
from pptune.fileio import check_output_path
from pptune.runtime.measured import MEASURED_FILE, Measured, load_measured
from pptune.runtime.plan_files import RunPlan, load_run_plan
from pptune.runtime.threads import CPU_THREADS_PER_RANK

LOG_FILE = "measure.log"
GRACE_S = 10.0
_OOM = re.compile(r"out of memory", re.IGNORECASE)
_SIGKILLED = re.compile(r"exitcode\s*:\s*-9\b|Signal 9 \(SIGKILL\)")
_ERROR_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?(pptune error: .*|\w*(?:Error|Exception)\b.*)$")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def worker_env() -> dict[str, str]:
    """The workers' environment: one OpenMP thread per rank, CPU accelerator when no GPU, pptune importable."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(CPU_THREADS_PER_RANK)  # ranks share the cores (docs/REFERENCE.md §2)
    env["PYTHONUNBUFFERED"] = "1"  # the log shows progress as it happens
    if "DS_ACCELERATOR" not in env and not _cuda_available():
        env["DS_ACCELERATOR"] = "cpu"
    root = str(Path(__file__).resolve().parents[2])  # so a source checkout works without installing
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def train_command(plan_dir: Path, *, nproc: int, steps: int, warmup: int, out: Path, ds_timers: bool) -> list[str]:
    """``python -m torch.distributed.run --standalone ... -m pptune.runtime.train PLAN_DIR ...``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "-m", "pptune.runtime.train", str(plan_dir), "--steps", str(steps), "--warmup", str(warmup), "--out", str(out)]
    return [*cmd, "--ds-timers"] if ds_timers else cmd


def _descendants(pid: int) -> list[int]:
    import psutil  # a DeepSpeed dependency

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _signal_all(pids: list[int], group: int, sig: signal.Signals) -> None:
    for target in (lambda: os.killpg(group, sig), *[(lambda p=p: os.kill(p, sig)) for p in pids]):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass


def _stop(proc: subprocess.Popen) -> None:
    """Stop torchrun and its workers (which live in their own sessions): SIGTERM, grace period, SIGKILL."""
    pids = _descendants(proc.pid)
    _signal_all(pids, proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    _signal_all([p for p in pids if _alive(p)], proc.pid, signal.SIGKILL)
    proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def failure_reason(log_text: str) -> str:
    """A short cause found in a failed run's log: out of memory, SIGKILL, pptune's error line, or the last exception."""
    if _OOM.search(log_text):
        return "out of memory"
    if _SIGKILLED.search(log_text):
        return "a worker was killed by SIGKILL (host out of memory?)"
    errors = [m.group(1).strip() for line in log_text.splitlines() if (m := _ERROR_LINE.match(line.strip()))]
    pptune = [e for e in errors if e.startswith("pptune error:")]
    if pptune:
        return pptune[-1].removeprefix("pptune error: ")
    # A rank that crashes makes its peers fail with "Connection closed by peer" (gloo): the cause is the other line.
    useful = [e for e in errors if not e.startswith("torch.distributed.elastic") and "closed by peer" not in e]
    return useful[-1][:300] if useful else "no error line found"


def check_runnable(plan: RunPlan, log: Path) -> None:
    """Refuse, before anything is launched or written, a plan the workers would refuse and unwritable outputs.

    Raises:
        ConfigError: a tp > 1 plan the tensor-parallel layers cannot run (``topology.check_tensor_parallel``),
            or PLAN_DIR (for measured.json) or the log file cannot be written.
    """
    from pptune.runtime.topology import check_tensor_parallel

    check_tensor_parallel(plan)
    check_output_path(plan.plan_dir, kind="directory", flag="PLAN_DIR")
    check_output_path(log, kind="file", flag="--log")


def run_plan(
    plan_dir: str | Path,
    *,
    nproc: int | None = None,
    steps: int = 10,
    warmup: int = 3,
    timeout_s: float = 600.0,
    log_path: str | Path | None = None,
    ds_timers: bool = False,
) -> Measured:
    """Train the plan in ``plan_dir`` for ``warmup + steps`` steps on this machine and return the measurement.

    Args:
        plan_dir: a plan directory (pipeline.json, ds_config.json).
        nproc: processes to start; default the plan's world size (pp * tp * dp).
        steps: timed steps; warmup: untimed steps before them.
        timeout_s: wall-clock limit of the whole launch (start-up included).
        log_path: where the run's stdout and stderr go (default ``PLAN_DIR/measure.log``).
        ds_timers: also record DeepSpeed's own wall_clock_breakdown timers.

    Returns:
        The ``Measured`` loaded from ``PLAN_DIR/measured.json``.

    Raises:
        RunError: non-zero exit, timeout or out of memory; the message names the log. A failed run leaves no
            measured.json (a stale one is deleted before starting).
        SchemaError, ConfigError: a bad plan directory (checked before launching).
    """
    plan = load_run_plan(plan_dir)
    plan_dir = plan.plan_dir
    nproc = plan.world_size if nproc is None else nproc
    out = plan_dir / MEASURED_FILE
    log = Path(log_path) if log_path is not None else plan_dir / LOG_FILE
    check_runnable(plan, log)
    log.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    cmd = train_command(plan_dir, nproc=nproc, steps=steps, warmup=warmup, out=out, ds_timers=ds_timers)
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=worker_env(), start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            out.unlink(missing_ok=True)
            raise RunError(f"training of {plan_dir} timed out after {timeout_s:g} s and was stopped; log: {log}") from None
        except BaseException:  # Ctrl-C: do not leave workers behind
            _stop(proc)
            raise
    text = log.read_text(errors="replace")
    if rc != 0 or _OOM.search(text):
        out.unlink(missing_ok=True)
        raise RunError(f"training of {plan_dir} failed (exit code {rc}): {failure_reason(text)}; log: {log}")
    if not out.exists():
        raise RunError(f"training of {plan_dir} exited 0 but wrote no {out.name}; log: {log}")
    return load_measured(out)
