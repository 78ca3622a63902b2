"""Measure the analytic model's GPU constants on the GPU at hand: a short GEMM / attention / memory sweep.

Usage (on a machine with the GPU, a few minutes; ``python -m pptune.calibrate.gpu_sweep`` is the same)::

    python benchmarks/gpu_sweep.py --preset h200 --out results/hardware/h200-sweep.json
    python benchmarks/gpu_sweep.py --preset local-cpu --device cpu --quick --out /tmp/cpu-sweep.json  # the code path

It times GEMMs of transformer-block shapes (QKV, projection, MLP; 512-8192 tokens, hidden 1024-8192), fused causal
attention forward and backward (``scaled_dot_product_attention``), large device copies and tiny eager ops, then
fits what ``pptune.profile.analytic`` uses (``pptune.calibrate.device_sweep``): ``matmul_efficiency`` and
``matmul_half_flops`` from the GEMMs, ``memory_efficiency`` from the copies; it reports the attention kernel's
achieved rate and backward/forward ratio (the model's ``FLASH_BWD_FACTOR``) and the host time per eager op
(``launch_overhead_us``), next to the preset's values. The JSON holds every timing; the constants go into
``pptune/data/gpus.json`` by hand, with this file as their provenance.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from pptune.calibrate.device_sweep import fit_gemm, memory_efficiency
from pptune.errors import PptuneError
from pptune.fileio import cpu_name, write_json_atomic
from pptune.hardware import load_cluster
from pptune.profile.flops import FLASH_BWD_FACTOR

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def timed_ms(fn: Callable[[], object], *, device: str, warmup: int, repeat: int) -> float:
    """Median milliseconds of ``fn`` (CUDA events on a GPU, the wall clock on a CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def gemm_shapes(quick: bool) -> list[tuple[int, int, int]]:
    """(tokens, in, out) of a block's GEMMs: QKV h->3h, projection h->h, MLP h->4h and 4h->h."""
    tokens, hiddens = ((64, 256), (128, 256)) if quick else ((512, 2048, 8192), (1024, 4096, 8192))
    return [(t, k, n) for t in tokens for h in hiddens for k, n in ((h, 3 * h), (h, h), (h, 4 * h), (4 * h, h))]


def sweep(*, device: str, dtype: str, quick: bool, warmup: int, repeat: int) -> dict:
    dt = DTYPES[dtype]
    gemms = []
    for t, k, n in gemm_shapes(quick):
        a, b = torch.randn(t, k, device=device, dtype=dt), torch.randn(k, n, device=device, dtype=dt)
        ms = timed_ms(lambda a=a, b=b: a @ b, device=device, warmup=warmup, repeat=repeat)
        gemms.append({"tokens": t, "k": k, "n": n, "flops": 2.0 * t * k * n, "ms": ms})
    copies = []
    for mib in ((4, 16) if quick else (256, 1024)):
        x = torch.empty(mib * 2**20 // dt.itemsize, device=device, dtype=dt)
        y = torch.empty_like(x)
        ms = timed_ms(lambda x=x, y=y: y.copy_(x), device=device, warmup=warmup, repeat=repeat)
        copies.append({"mib": mib, "bytes": 2.0 * mib * 2**20, "ms": ms})  # read + write
    attention = []
    for batch, heads, seq, dim in (((1, 2, 128, 32),) if quick else ((1, 32, 2048, 128), (2, 32, 4096, 128))):
        q, k_, v = (torch.randn(batch, heads, seq, dim, device=device, dtype=dt, requires_grad=True) for _ in range(3))
        out = F.scaled_dot_product_attention(q, k_, v, is_causal=True)
        grad = torch.randn_like(out)
        fwd = timed_ms(lambda q=q, k_=k_, v=v: F.scaled_dot_product_attention(q, k_, v, is_causal=True),
                       device=device, warmup=warmup, repeat=repeat)

        def fwd_bwd(q=q, k_=k_, v=v, grad=grad) -> None:
            F.scaled_dot_product_attention(q, k_, v, is_causal=True).backward(grad)

        both = timed_ms(fwd_bwd, device=device, warmup=warmup, repeat=repeat)
        flops = 4.0 * batch * heads * seq * seq * dim  # the full s x s work, as pptune counts it
        attention.append({"batch": batch, "heads": heads, "seq": seq, "dim": dim, "fwd_ms": fwd,
                          "bwd_ms": max(both - fwd, 0.0), "fwd_flops_full": flops})
    small = torch.ones(8, device=device, dtype=dt)
    ops = 200 if quick else 2000

    def many_ops() -> None:
        for _ in range(ops):
            small.add_(0)

    host_us = timed_ms(many_ops, device=device, warmup=1, repeat=3) * 1e3 / ops
    return {"gemms": gemms, "copies": copies, "attention": attention, "host_us_per_op": host_us}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="h200", help="cluster preset whose GPU constants to compare (h200, ...)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dtype", default=None, choices=tuple(DTYPES), help="default bf16 on cuda, fp32 on cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (checks the code path, e.g. on a CPU)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", required=True, help="JSON report")
    args = parser.parse_args(argv)
    dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    try:
        gpu = load_cluster(args.preset).gpu
    except PptuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU (use --device cpu --quick to check the code path)",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    data = sweep(device=args.device, dtype=dtype, quick=args.quick, warmup=args.warmup, repeat=args.repeat)
    peak = gpu.peak_tflops(dtype)
    g = fit_gemm([x["flops"] for x in data["gemms"]], [x["ms"] for x in data["gemms"]], peak_tflops=peak)
    mem = memory_efficiency([x["bytes"] for x in data["copies"]], [x["ms"] for x in data["copies"]],
                            hbm_gbps=gpu.hbm_gbps)
    attn = [{**a, "achieved_tflops_causal": a["fwd_flops_full"] / 2 / (a["fwd_ms"] / 1e3) / 1e12,
             "bwd_over_fwd": a["bwd_ms"] / a["fwd_ms"] if a["fwd_ms"] > 0 else None} for a in data["attention"]]
    report = {
        "command": " ".join(["python", "benchmarks/gpu_sweep.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else cpu_name(),
        "torch": torch.__version__, "dtype": dtype, "preset": args.preset, "wall_s": round(time.monotonic() - started, 1),
        "fitted": {"matmul_efficiency": g.matmul_efficiency, "matmul_half_flops": g.matmul_half_flops,
                   "memory_efficiency": mem, "launch_overhead_us_eager_add": data["host_us_per_op"],
                   "gemm_fit_max_rel_error": g.max_rel_error},
        "preset_values": {"matmul_efficiency": gpu.matmul_efficiency, "matmul_half_flops": gpu.matmul_half_flops,
                          "memory_efficiency": gpu.memory_efficiency, "launch_overhead_us": gpu.launch_overhead_us,
                          "flash_bwd_factor": FLASH_BWD_FACTOR, "peak_tflops": peak, "hbm_gbps": gpu.hbm_gbps},
        "gemms": data["gemms"], "copies": data["copies"], "attention": attn,
    }
    write_json_atomic(Path(args.out), report)
    f = report["fitted"]
    print(f"{report['device']} ({dtype}), preset {args.preset}:")
    print(f"  matmul_efficiency  {f['matmul_efficiency']:.3f} (preset {gpu.matmul_efficiency:.3f})")
    print(f"  matmul_half_flops  {f['matmul_half_flops']:.3g} (preset {gpu.matmul_half_flops:.3g}); "
          f"GEMM fit max error {g.max_rel_error:.1%} over {g.points} shapes")
    print(f"  memory_efficiency  {mem:.3f} (preset {gpu.memory_efficiency:.3f})")
    for a in attn:
        print(f"  attention b{a['batch']} h{a['heads']} s{a['seq']} d{a['dim']}: {a['achieved_tflops_causal']:.1f} "
              f"TFLOP/s causal, backward/forward {a['bwd_over_fwd']:.2f} (model {FLASH_BWD_FACTOR})")
    print(f"  host time per eager op {data['host_us_per_op']:.1f} us (preset launch_overhead_us "
          f"{gpu.launch_overhead_us}: eager Megatron's, autograd included)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
