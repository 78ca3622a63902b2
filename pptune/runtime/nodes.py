"""Several nodes: a DeepSpeed hostfile, torchrun's static rendezvous, and the agent command of each node.

One torchrun agent runs per node. With ``--nnodes N --node-rank R --master-addr A --master-port P`` and no
``--rdzv-backend``, torchrun uses its *static* rendezvous (torch/distributed/run.py: "static" is the default
backend when ``--rdzv-endpoint``/``--rdzv-backend`` are not given): node R's workers get the global ranks
``R * nproc_per_node ...``, so global rank 0, which writes measured.json after gathering every rank's record
(runtime/train.py ``all_gather_object``), is on node 0. The c10d backend assigns node ranks in arrival order,
which would put measured.json on whichever node came first.

The hostfile is DeepSpeed's launcher format (deepspeed/launcher/runner.py ``_parse_hostfile``, DeepSpeed 0.19.8):
one ``<host> slots=<processes>`` per line, ``#`` comments and blank lines ignored, a host listed once; node 0 is
the first line and serves the rendezvous (MASTER_ADDR). Hosts other than this one are reached with ``ssh``
(BatchMode: keys, no password), and the plan directory and the Python environment must be at the same paths
on every node (a shared file system), as DeepSpeed's own pdsh launcher assumes.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path

from pptune.errors import ConfigError

_LINE = re.compile(r"^(\S+)\s+slots=(\d+)")  # deepspeed/launcher/runner.py _parse_hostfile's pattern
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Rendezvous:
    """Where this agent is among the job's nodes (torchrun's static rendezvous)."""

    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int

    def __post_init__(self) -> None:
        if self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"need --nnodes >= 1 and 0 <= --node-rank < --nnodes; got {self.nnodes}, {self.node_rank}")
        if not 0 < self.master_port < 65536:
            raise ConfigError(f"rendezvous port must be in 1..65535, got {self.master_port}")

    def torchrun_args(self) -> list[str]:
        return ["--nnodes", str(self.nnodes), "--node-rank", str(self.node_rank), "--master-addr", self.master_addr,
                "--master-port", str(self.master_port)]


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (torchrun's ``--rdzv-endpoint``) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--rdzv-endpoint must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, kw_only=True, slots=True)
class Host:
    name: str
    slots: int  # processes (GPUs) on it


def read_hostfile(path: str | Path) -> tuple[Host, ...]:
    """The hosts of a DeepSpeed hostfile, in order.

    Raises:
        ConfigError: unreadable file, a line that is not ``<host> slots=<n>``, a host listed twice, zero slots
            or no host at all (the one-line errors DeepSpeed's launcher raises as ValueError).
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--hostfile {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    hosts: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.search(line)
        if match is None:
            raise ConfigError(f"--hostfile {path}: line {number}: expected '<host> slots=<n>', got {line!r}")
        name, slots = match.group(1), int(match.group(2))
        if name in hosts:
            raise ConfigError(f"--hostfile {path}: line {number}: host {name!r} is listed twice")
        if slots < 1:
            raise ConfigError(f"--hostfile {path}: line {number}: {name} has slots={slots}; need at least 1")
        hosts[name] = slots
    if not hosts:
        raise ConfigError(f"--hostfile {path}: no '<host> slots=<n>' line")
    return tuple(Host(name=n, slots=s) for n, s in hosts.items())


def is_local(host: str) -> bool:
    """True for this machine's names (loopback, its hostname, its fully qualified name)."""
    return host in LOCAL_NAMES or host in {socket.gethostname(), socket.getfqdn()}


def free_port() -> int:
    """A TCP port free on this machine now (node 0's rendezvous when it is this machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def check_world(hosts: tuple[Host, ...], world_size: int) -> None:
    """The hostfile's slots must add up to the plan's world size (pp * tp * dp), the same on every node."""
    total = sum(h.slots for h in hosts)
    if total != world_size:
        raise ConfigError(f"the hostfile has {total} slots over {len(hosts)} node(s) but the plan needs "
                          f"{world_size} processes (pp * tp * dp)")
    if len({h.slots for h in hosts}) > 1:
        raise ConfigError("every node of the hostfile must have the same slots (torchrun's --nproc-per-node), got "
                          + ", ".join(f"{h.name}={h.slots}" for h in hosts))


def rendezvous_from(nnodes: int | None, node_rank: int | None, endpoint: str | None) -> Rendezvous | None:
    """``--nnodes --node-rank --rdzv-endpoint`` as a Rendezvous (None when none is given; all or none)."""
    given = [nnodes is not None, node_rank is not None, endpoint is not None]
    if not any(given):
        return None
    if not all(given):
        raise ConfigError("a multi-node run needs all of --nnodes, --node-rank and --rdzv-endpoint HOST:PORT")
    host, port = parse_endpoint(endpoint)  # type: ignore[arg-type]
    return Rendezvous(nnodes=nnodes, node_rank=node_rank, master_addr=host, master_port=port)  # type: ignore[arg-type]
