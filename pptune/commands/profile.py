"""``pptune profile MODEL``: measure per-layer forward/backward time and memory, write profiles/<model>-<device>.json."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from pptune.errors import ConfigError
from pptune.fileio import check_output_path
from pptune.runtime.threads import CPU_THREADS_PER_RANK

DEFAULT_DIR = Path("profiles")


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(
        name,
        help="measure each pipeline layer of a model (time, saved activations, FLOPs) and write a profile JSON",
        description="Measure forward and backward time, saved-for-backward bytes, output bytes and FLOPs of every "
        "pipeline layer at several micro-batch sizes. MODEL: a preset (gpt2-small), a spec "
        "(gpt:layers=4,hidden=256,heads=4), hf:gpt2[?n_layer=4&...], hf:llama[?...] or package.module:function.",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sample (default: the model's own length)")
    p.add_argument("--micro-batch-sizes", type=_sizes, default=(1, 2, 4, 8), metavar="1,2,4,8",
                   help="comma-separated micro-batch sizes to measure (default: 1,2,4,8)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default on cpu: what each rank of a CPU run gets, "
                        f"{CPU_THREADS_PER_RANK}; on cuda: torch's own choice)")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations per layer and size (>= 5; default 5)")
    p.add_argument("--repeat", type=int, default=10, help="timed iterations per layer and size (default 10)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="profile file to write (default: profiles/<model>-<device>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tp", type=int, default=1,
                   help="time what one rank of a tensor-parallel group of this size computes (pptune's tp layers, "
                        "collectives left out: the cost model prices them); preset or spec models (default 1)")
    p.set_defaults(run=run)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4,8, got {text!r}") from None
    if not sizes:
        raise argparse.ArgumentTypeError("expected at least one micro-batch size")
    return sizes


def default_output(model: str, device: str) -> Path:
    """profiles/<model>-<device>.json, with characters unsafe in file names (':', ',', '=', '?') replaced."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"
    return DEFAULT_DIR / f"{safe}-{device}.json"


def run(args: argparse.Namespace) -> int:
    from pptune.model.resolve import load_model_layers
    from pptune.profile.measure import profile_model
    from pptune.profile.schema import save_profile

    if args.seq_len is not None and args.seq_len < 1:
        raise ConfigError(f"--seq-len must be positive, got {args.seq_len}")
    output = check_output_path(args.output or default_output(args.model, args.device), kind="file", flag="-o")
    if args.tp < 1:
        raise ConfigError(f"--tp must be at least 1, got {args.tp}")
    if args.tp > 1:
        from pptune.profile.tp_shard import tp_model_layers

        layers = tp_model_layers(args.model, args.tp, args.seq_len)
    else:
        layers = load_model_layers(args.model, args.seq_len)
    seq_len = args.seq_len or _own_seq_len(layers)
    profile = profile_model(
        layers, seq_len=seq_len, micro_batch_sizes=args.micro_batch_sizes,
        device=args.device, dtype=args.dtype, threads=_threads(args), warmup=args.warmup, repeat=args.repeat,
        command=args.command_line, progress=not args.no_progress, tp=args.tp,
    )
    out = save_profile(profile, output)
    print(format_table(profile))
    print(f"wrote {out}")
    return 0


def _threads(args: argparse.Namespace) -> int | None:
    """--threads, else on CPU the threads a rank of the run will have (a profile timed otherwise predicts wrong)."""
    if args.threads is not None:
        return args.threads
    return CPU_THREADS_PER_RANK if args.device == "cpu" else None


def _own_seq_len(layers) -> int:
    if layers.default_seq_len is None:
        raise ConfigError(f"model {layers.name!r}: give --seq-len (its sequence length is not known to pptune)")
    return layers.default_seq_len


def format_table(profile) -> str:
    """One row per measured layer (identical ones folded into 'xN'), at the smallest and largest micro-batch size."""
    lo, hi = profile.micro_batch_sizes[0], profile.micro_batch_sizes[-1]
    copies = {layer.index: 1 for layer in profile.layers if layer.shares_measurement_with is None}
    for layer in profile.layers:
        if layer.shares_measurement_with is not None:
            copies[layer.shares_measurement_with] += 1
    rows = [f"{profile.model} on {profile.device_name} ({profile.device}, {profile.dtype}, seq {profile.seq_len}, "
            f"{profile.threads} threads)",
            f"{'layer':<16}{'params':>12}{f'fwd@{lo} ms':>12}{f'bwd@{lo} ms':>12}{f'fwd@{hi} ms':>12}{f'bwd@{hi} ms':>12}"
            f"{f'saved@{hi} MiB':>15}"]
    for layer in profile.layers:
        if layer.index not in copies:
            continue
        a, b = layer.timing(lo), layer.timing(hi)
        name = layer.name + (f" x{copies[layer.index]}" if copies[layer.index] > 1 else "")
        rows.append(f"{name:<16}{layer.param_count:>12,}{a.fwd_ms:>12.2f}{a.bwd_ms:>12.2f}{b.fwd_ms:>12.2f}"
                    f"{b.bwd_ms:>12.2f}{b.saved_bytes / 2**20:>15.1f}")
    return "\n".join(rows)

