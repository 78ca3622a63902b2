"""``pptune probe-cluster``: measure the links between local ranks and write a cluster JSON for planning."""

from __future__ import annotations

import argparse
from pathlib import Path

_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20}


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(
        name,
        help="measure p2p and all-reduce bandwidth/latency between local ranks; write a cluster JSON",
        description="Spawn N local ranks (gloo on CPU, NCCL on GPUs), time ping-pong send/recv between ranks 0 "
        "and 1 and all-reduces over all ranks from 4 KiB to 64 MiB, fit latency + size/bandwidth, and write a "
        "cluster file that --cluster accepts (one node of N ranks; the raw fits go under calibration.probe).",
    )
    p.add_argument("--nproc", type=int, default=2, help="ranks to spawn (default 2)")
    p.add_argument("--backend", choices=("gloo", "nccl"), default=None,
                   help="default: nccl when there is a CUDA GPU per rank, else gloo")
    p.add_argument("--sizes", type=_sizes, default=None, metavar="4K,64K,1M,64M",
                   help="message sizes (bytes; K and M suffixes; default 4K..64M in powers of 4)")
    p.add_argument("--repeat", type=int, default=5, help="timed samples per size; the median is kept (default 5)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds (default 300)")
    p.add_argument("-o", "--output", type=Path, default=None, help="cluster JSON to write (default: print only)")
    p.set_defaults(run=run)


def _sizes(text: str) -> tuple[int, ...]:
    sizes = []
    for part in filter(None, (x.strip() for x in text.split(","))):
        digits = part.rstrip("kKmMiIbB")
        unit = part[len(digits):].upper()
        if not digits.isdigit() or unit not in _UNITS:
            raise argparse.ArgumentTypeError(f"expected sizes like 4K,64K,1M, got {part!r}")
        sizes.append(int(digits) * _UNITS[unit])
    if len(set(sizes)) < 2:
        raise argparse.ArgumentTypeError(f"expected at least two distinct sizes, got {text!r}")
    return tuple(sizes)


def run(args: argparse.Namespace) -> int:
    from pptune.fileio import check_output_path
    from pptune.hardware import load_cluster, save_cluster
    from pptune.probe import DEFAULT_SIZES_BYTES, probe_links

    if args.output is not None:  # refused before the ranks start, not after the measurement
        check_output_path(args.output, kind="file", flag="-o")
    raw = probe_links(args.nproc, args.backend, args.sizes or DEFAULT_SIZES_BYTES, args.repeat,
                      timeout_s=args.timeout)
    raw["calibration"]["probe"]["command"] = getattr(args, "command_line", None)
    cluster = load_cluster(raw)
    probe = cluster.calibration["probe"]
    print(f"{probe['nproc']} ranks, {probe['backend']} on {probe['device']}")
    print(f"p2p:        {probe['p2p_gbps']:.3f} GB/s, latency {probe['p2p_latency_us']:.1f} us")
    print(f"all-reduce: {probe['allreduce_bus_gbps']:.3f} GB/s bus bandwidth, latency {probe['allreduce_latency_us']:.1f} us")
    busy = probe.get("allreduce_after_compute_us")
    if busy:
        sizes = ", ".join(f"{int(k) // 1024} KiB {v:.0f} us" for k, v in sorted(busy.items(), key=lambda kv: int(kv[0])))
        bw = probe.get("allreduce_after_compute_bus_gbps")
        print(f"after compute: all-reduces add {sizes}" + (f" ({bw:.3f} GB/s bus)" if bw else "")
              + f" -> collective step latency {probe['collective_step_latency_us']:.1f} us")
    if "gpu_note" in probe:
        print(f"note: {probe['gpu_note']}")
    if args.output is not None:
        print(f"wrote {save_cluster(cluster, args.output)}")
    return 0
