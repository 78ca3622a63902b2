"""Held-out check: pptune's committed A100 constants against published multi-node runs (nothing fitted on them).

Usage: ``python benchmarks/published_multinode.py [--out results/validation/published]``. The check, its runs and
their sources live in ``pptune.calibrate.multinode`` and ``pptune.calibrate.published_runs`` (the tests use them).
"""

from pptune.calibrate.multinode import main

if __name__ == "__main__":
    raise SystemExit(main())
