"""Measure the analytic model's GPU constants on the GPU at hand: a short GEMM / attention / memory sweep.

Usage (on a machine with the GPU, a few minutes)::

    python benchmarks/gpu_sweep.py --preset h200 --out results/hardware/h200-sweep.json
    python benchmarks/gpu_sweep.py --preset local-cpu --device cpu --quick --out /tmp/cpu-sweep.json  # the code path

The sweep and its fits live in ``pptune.calibrate.gpu_sweep`` (the tests run it on the CPU).
"""

from pptune.calibrate.gpu_sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
