"""Check that this tree predicts the published runs exactly as git revision REV did (cost-model refactors).

Run: ``python benchmarks/check_published_identical.py REV``.

Predicts, with REV's ``pptune`` (its whole tree extracted with ``git archive``, benchmarks included) and with this
tree's, each in a fresh process: the 1,440 single-node A100 Megatron-DeepSpeed iterations
(``tests/data/a100_megatron_single_node.csv``, the committed ``a100-80g`` constants, as ``pptune validate
--published`` does) and the published multi-node runs of ``results/validation/published/multinode.md`` (as
``benchmarks/published_multinode.py`` does; before that code moved into ``pptune.calibrate`` it lived in the
benchmark). Prints, per set, how many predictions differ and the largest relative difference; exit 1 if any
differs by more than ``--rel`` (default 1e-9).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SINGLE_NODE = ROOT / "tests" / "data" / "a100_megatron_single_node.csv"


def dump(benchmarks: str) -> dict:
    """{"single": [ms per row], "multi": [[label, ms] per run]} with the pptune this process imports."""
    from pptune.calibrate.constants import Constants
    from pptune.calibrate.predict import predict_rows
    from pptune.calibrate.published import load_published
    from pptune.hardware import load_cluster

    base = load_cluster("a100-80g")
    single = predict_rows(load_published(SINGLE_NODE), base, Constants.of(base))
    try:
        from pptune.calibrate import multinode, published_runs
    except ImportError:  # an older revision: the multi-node check lived in its benchmarks/
        sys.path.insert(0, benchmarks)  # before this script's own folder
        import published_multinode as multinode
        import published_runs
    runs = (published_runs.korthikanti_runs() + published_runs.sc21_runs() + published_runs.mtnlg_runs()
            + [published_runs.bloom_run()] + published_runs.vtrain_runs())
    multi = []
    for run in runs:
        if run.tp > 8:  # not modelled (tensor parallelism across nodes), as the benchmark skips them
            continue
        run = multinode.with_chosen_knobs(run)
        multi.append([f"{run.source} {run.name} tp{run.tp} pp{run.pp} dp{run.dp} mbs{run.micro_batch}",
                      multinode.predict(run).step_time_ms])
    return {"single": single, "multi": multi}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", nargs="?", help="git revision to compare with")
    parser.add_argument("--rel", type=float, default=1e-9, help="largest relative difference allowed")
    parser.add_argument("--dump", metavar="BENCHMARKS", help=argparse.SUPPRESS)  # this process's predictions
    args = parser.parse_args()
    if args.dump:
        import pptune

        print(json.dumps({"pptune": pptune.__file__, **dump(args.dump)}))
        return 0
    if not args.rev:
        parser.error("give the git revision to compare with")
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.rev], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        got = {}
        for name, tree in (("rev", tmp), ("this", str(ROOT))):
            out = json.loads(subprocess.run([sys.executable, __file__, "--dump", f"{tree}/benchmarks"],
                                            env={**os.environ, "PYTHONPATH": tree}, capture_output=True, text=True,
                                            check=True).stdout)
            assert (name == "rev") == Path(out["pptune"]).is_relative_to(tmp), out["pptune"]
            got[name] = out
    failed = False
    for key, label in (("single", "single-node rows"), ("multi", "multi-node runs")):
        old, new = got["rev"][key], got["this"][key]
        if key == "multi":
            assert [a for a, _ in old] == [b for b, _ in new], "the two revisions predict different runs"
            old, new = [x for _, x in old], [x for _, x in new]
        rel = [abs(a - b) / abs(a) for a, b in zip(old, new, strict=True)]
        differ = sum(r > 0 for r in rel)
        worst = max(rel, default=0.0)
        failed |= worst > args.rel
        print(f"{label}: {len(new)} predictions, {differ} differ from {args.rev}, largest relative difference "
              f"{worst:.3g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
