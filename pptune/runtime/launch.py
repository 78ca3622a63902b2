"""Launch ``pptune.runtime.train`` on this machine with torchrun, bounded in time, and load what it measured.

``torchrun --standalone`` serves its rendezvous store on a free port and hands that port to the workers as
MASTER_PORT, so concurrent runs on one machine do not collide. torchrun starts every worker in its own session
(torch/distributed/elastic/multiprocessing/subprocess_handler), so on timeout the launcher signals torchrun's
process group *and* each worker by pid, SIGTERM first and SIGKILL after a grace period.

Several nodes (runtime/nodes.py): one torchrun agent per node on a static rendezvous, either this node's agent
only (``rendezvous``: run once per node, as SLURM's srun does) or one agent per line of a DeepSpeed hostfile
(``hostfile``: local hosts as subprocesses, others over ssh). Rank 0 gathers every rank's record, so node 0's
measured.json holds all of them; when one agent fails the others are stopped.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pptune.errors import ConfigError, RunError
from pptune.fileio import check_output_path
from pptune.runtime.measured import MEASURED_FILE, Measured, load_measured
from pptune.runtime.nodes import Rendezvous, check_world, free_port, is_local, read_hostfile
from pptune.runtime.plan_files import RunPlan, load_run_plan
from pptune.runtime.threads import CPU_THREADS_PER_RANK

LOG_FILE = "measure.log"
GRACE_S = 10.0
_OOM = re.compile(r"out of memory", re.IGNORECASE)
_SIGKILLED = re.compile(r"exitcode\s*:\s*-9\b|Signal 9 \(SIGKILL\)")
_ERROR_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?(pptune error: .*|[\w.]*(?:Error|Exception)\b.*)$")
_SIGNALLED = re.compile(r"exitcode\s*:\s*-(\d+)\b")
# torchrun's failure summary: its lines name no cause (exit codes, hosts, times, rulers)
_SUMMARY_LINE = re.compile(r"^\s*(?:time|host|rank|exitcode|error_file|traceback)\s*:|^[=\-]+$|^\[\d+\]:$|"
                           r"Root Cause|^Failures:|NO_OTHER_FAILURES|^\$ |^\s*$")


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


def train_command(plan_dir: Path, *, nproc: int, steps: int, warmup: int, out: Path, ds_timers: bool,
                  rendezvous: Rendezvous | None = None) -> list[str]:
    """``python -m torch.distributed.run --standalone ... -m pptune.runtime.train PLAN_DIR ...``.

    With ``rendezvous``: this node's agent of a multi-node job (torchrun's static rendezvous, ``runtime/nodes.py``).
    """
    nodes = ["--standalone", "--nnodes", "1"] if rendezvous is None else rendezvous.torchrun_args()
    cmd = [sys.executable, "-m", "torch.distributed.run", *nodes, "--nproc_per_node", str(nproc),
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
    """A short cause found in a failed run's log.

    In order: out of memory, a worker killed by a signal, pptune's error line, the last exception, and else the last
    line the workers printed (never an empty reason: CI logs and users need something to go on).
    """
    if _OOM.search(log_text):
        return "out of memory"
    if _SIGKILLED.search(log_text):
        return "a worker was killed by SIGKILL (host out of memory?)"
    lines = log_text.splitlines()
    errors = [m.group(1).strip() for line in lines if (m := _ERROR_LINE.match(line.strip()))]
    pptune = [e for e in errors if e.startswith("pptune error:")]
    if pptune:
        return pptune[-1].removeprefix("pptune error: ")
    # A rank that crashes makes its peers fail with "Connection closed by peer" (gloo): the cause is the other line.
    useful = [e for e in errors if not e.startswith("torch.distributed.elastic") and "closed by peer" not in e
              and not e.startswith("ChildFailedError")]
    if useful:
        return useful[-1][:300]
    if signalled := _SIGNALLED.search(log_text):
        number = int(signalled.group(1))
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"a worker died of {name} (no Python error was printed)"
    printed = [line.strip() for line in lines if not _SUMMARY_LINE.search(line)]
    return f"no error line found; last output: {printed[-1][:300]}" if printed else "no error line found"


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
    rendezvous: Rendezvous | None = None,
    hostfile: str | Path | None = None,
) -> Measured | None:
    """Train the plan in ``plan_dir`` for ``warmup + steps`` steps and return the measurement.

    Args:
        plan_dir: a plan directory (pipeline.json, ds_config.json).
        nproc: processes to start on this node; default the plan's world size (pp * tp * dp) over the nodes.
        steps: timed steps; warmup: untimed steps before them.
        timeout_s: wall-clock limit of the whole launch (start-up included).
        log_path: where the run's stdout and stderr go (default ``PLAN_DIR/measure.log``; node i > 0 of a
            ``hostfile`` job writes ``measure.log.node<i>`` beside it).
        ds_timers: also record DeepSpeed's own wall_clock_breakdown timers.
        rendezvous: run only this node's agent of a multi-node job (once per node, e.g. under SLURM).
        hostfile: a DeepSpeed hostfile: start one agent per host (ssh for other hosts), node 0 = the first line.

    Returns:
        The ``Measured`` loaded from ``PLAN_DIR/measured.json`` (every rank's record: rank 0 gathers them), or
        None on a ``rendezvous`` node other than 0 (node 0 writes the file).

    Raises:
        RunError: non-zero exit, timeout or out of memory; the message names the log. A failed run leaves no
            measured.json (a stale one is deleted before starting).
        SchemaError, ConfigError: a bad plan directory, hostfile or rendezvous (checked before launching).
    """
    plan = load_run_plan(plan_dir)
    plan_dir = plan.plan_dir
    out = plan_dir / MEASURED_FILE
    log = Path(log_path) if log_path is not None else plan_dir / LOG_FILE
    check_runnable(plan, log)
    agents = _agents(plan, nproc=nproc, steps=steps, warmup=warmup, out=out, ds_timers=ds_timers,
                     rendezvous=rendezvous, hostfile=hostfile, log=log)
    writes_out = rendezvous is None or rendezvous.node_rank == 0
    log.parent.mkdir(parents=True, exist_ok=True)
    if writes_out:
        out.unlink(missing_ok=True)
    rc, failed_log = _run_agents(agents, timeout_s=timeout_s, plan_dir=plan_dir, out=out if writes_out else None)
    text = failed_log.read_text(errors="replace")
    if rc != 0 or _OOM.search(text):
        if writes_out:
            out.unlink(missing_ok=True)
        raise RunError(f"training of {plan_dir} failed (exit code {rc}): {failure_reason(text)}; log: {failed_log}")
    if not writes_out:
        return None
    if not out.exists():
        raise RunError(f"training of {plan_dir} exited 0 but wrote no {out.name}; log: {log}")
    return load_measured(out)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Agent:
    cmd: list[str]
    env: dict[str, str]
    log: Path


def _agents(plan: RunPlan, *, nproc: int | None, steps: int, warmup: int, out: Path, ds_timers: bool,
            rendezvous: Rendezvous | None, hostfile: str | Path | None, log: Path) -> list[_Agent]:
    """The torchrun agents to start here: one (this node), or one per hostfile line."""
    env = worker_env()
    if hostfile is None:
        nnodes = 1 if rendezvous is None else rendezvous.nnodes
        if nproc is None:
            if plan.world_size % nnodes:
                raise ConfigError(f"the plan's {plan.world_size} processes do not split over {nnodes} nodes")
            nproc = plan.world_size // nnodes
        cmd = train_command(plan.plan_dir, nproc=nproc, steps=steps, warmup=warmup, out=out, ds_timers=ds_timers,
                            rendezvous=rendezvous)
        return [_Agent(cmd=cmd, env=env, log=log)]
    if rendezvous is not None or nproc is not None:
        raise ConfigError("--hostfile sets the nodes and processes itself: give no --nproc or rendezvous with it")
    hosts = read_hostfile(hostfile)
    check_world(hosts, plan.world_size)
    master = "127.0.0.1" if is_local(hosts[0].name) else hosts[0].name
    port = free_port()
    local = sum(is_local(h.name) for h in hosts)
    if local > 1:  # several agents on this machine: each would pin its local rank 0 to the same core
        env = {**env, "PPTUNE_PIN_CPU": "0"}
    agents = []
    for rank, host in enumerate(hosts):
        rdzv = Rendezvous(nnodes=len(hosts), node_rank=rank, master_addr=master, master_port=port)
        cmd = train_command(plan.plan_dir, nproc=host.slots, steps=steps, warmup=warmup, out=out,
                            ds_timers=ds_timers, rendezvous=rdzv)
        agent_log = log if rank == 0 else log.with_name(f"{log.name}.node{rank}")
        agents.append(_Agent(cmd=cmd if is_local(host.name) else _ssh(host.name, cmd, env), env=env, log=agent_log))
    return agents


def _ssh(host: str, cmd: list[str], env: dict[str, str]) -> list[str]:
    """``cmd`` run on ``host`` from this working directory with the workers' settings (shared file system).

    ``-tt`` gives the remote command a terminal, so stopping ssh here hangs it up there too.
    """
    keep = {k: env[k] for k in ("OMP_NUM_THREADS", "PYTHONPATH", "PYTHONUNBUFFERED", "DS_ACCELERATOR",
                                "PPTUNE_PIN_CPU") if k in env}
    remote = f"cd {shlex.quote(os.getcwd())} && env {' '.join(f'{k}={shlex.quote(v)}' for k, v in keep.items())} " \
             f"{shlex.join(cmd)}"
    return ["ssh", "-tt", "-o", "BatchMode=yes", host, remote]


def _run_agents(agents: list[_Agent], *, timeout_s: float, plan_dir: Path, out: Path | None) -> tuple[int, Path]:
    """Start every agent, wait for all of them (stopping the rest when one fails); (exit code, the log to read)."""
    procs: list[tuple[subprocess.Popen, _Agent]] = []
    handles = []
    try:
        for agent in agents:
            fh = open(agent.log, "w")
            handles.append(fh)
            fh.write("$ " + " ".join(agent.cmd) + "\n")
            fh.flush()
            procs.append((subprocess.Popen(agent.cmd, stdout=fh, stderr=subprocess.STDOUT, env=agent.env,
                                           start_new_session=True), agent))
        deadline = time.monotonic() + timeout_s
        while True:
            codes = [p.poll() for p, _ in procs]
            bad = next((i for i, c in enumerate(codes) if c not in (None, 0)), None)
            if bad is not None:
                for p, _ in procs:
                    if p.poll() is None:
                        _stop(p)
                return codes[bad], procs[bad][1].log  # type: ignore[return-value]
            if all(c == 0 for c in codes):
                return 0, agents[0].log
            if time.monotonic() > deadline:
                for p, _ in procs:
                    _stop(p)
                if out is not None:
                    out.unlink(missing_ok=True)
                raise RunError(f"training of {plan_dir} timed out after {timeout_s:g} s and was stopped; "
                               f"log: {agents[0].log}")
            time.sleep(0.1)
    except BaseException:  # Ctrl-C: do not leave workers behind
        for p, _ in procs:
            if p.poll() is None:
                _stop(p)
        raise
    finally:
        for fh in handles:
            fh.close()
