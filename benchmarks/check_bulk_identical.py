"""Check that this tree's bulk cost model predicts exactly what git revision REV's did, on the 175B planning spaces.

Run: ``python benchmarks/check_bulk_identical.py REV`` (e.g. the commit before a speed-up).

Speed work on ``pptune.cost.bulk`` and ``pptune.cost.sim_batch`` should not move a prediction. This runs
``estimate_many`` over the spaces of ``bench_plan_speed.py`` (GPT-3 175B on 1,024 A100-80GB, DeepSpeed and Megatron
targets) with REV's ``pptune`` (extracted with ``git archive``) and with this tree's, each in a fresh process, and
compares every field of every result: floats bit for bit, the rest with ``==`` (errors by message). Prints one line
per space with the count of differing values and the largest relative difference; exit 1 if any differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_plan_speed import baseline_tree  # noqa: E402

from pptune.testing.bit_identity import compare, dump  # noqa: E402
from pptune.testing.large_space import TARGETS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", nargs="?", help="git revision to compare with")
    parser.add_argument("--dump", choices=TARGETS, help=argparse.SUPPRESS)  # one space's results (a subprocess)
    args = parser.parse_args()
    if args.dump:
        import pptune

        print(json.dumps({"pptune": pptune.__file__, "results": dump(args.dump)}))
        return 0
    if not args.rev:
        parser.error("give the git revision to compare with")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        tree = baseline_tree(args.rev, Path(tmp))
        for target in TARGETS:
            got = {}
            for name, env in (("rev", {**os.environ, "PYTHONPATH": str(tree)}), ("this", None)):
                out = json.loads(subprocess.run([sys.executable, __file__, "--dump", target], env=env,
                                                capture_output=True, text=True, check=True).stdout)
                # The revision's process must have imported the extracted tree, not this checkout's package.
                assert (name == "rev") == Path(out["pptune"]).is_relative_to(tree), out["pptune"]
                got[name] = out["results"]
            differ, worst = compare(got["rev"], got["this"])
            failed |= differ > 0
            print(f"{target} space: {len(got['this'])} configurations, {differ} values differ from {args.rev}"
                  + (f" (largest relative difference {worst:.3g})" if differ else " (all bit-identical)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
