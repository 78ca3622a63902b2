"""ZB-H1 and 1F1B bubble rates against the Zero Bubble paper's own profiled setups (Qi et al., ICLR 2024).

Usage: ``python benchmarks/zb_paper.py [--out results/validation/zero_bubble.md]``. The setups, their source and
the check live in ``pptune.calibrate.zero_bubble`` (tests/calibrate/test_zero_bubble.py uses them).
"""

from __future__ import annotations

import argparse

from pptune.calibrate.zero_bubble import report_markdown
from pptune.fileio import write_text_atomic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/validation/zero_bubble.md")
    args = parser.parse_args()
    text = report_markdown(f"python benchmarks/zb_paper.py --out {args.out}")
    print(text, end="")
    write_text_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
