"""Where pptune's zero-shot vTrain multi-node errors sit: mean signed error by tp, pp, dp, micro-batch, m, nodes, size.

Usage: ``python benchmarks/multinode_residuals.py [--out results/validation/published]``. Reads the committed
``multinode.csv`` in ``--out`` (written by ``benchmarks/published_multinode.py``) and writes ``residuals.md`` there.
Nothing is fitted; it only groups the per-run errors.
"""

import argparse
import csv
import os
import statistics
import sys
from collections import defaultdict

GROUPS = ("tp", "pp", "dp", "mbs", "m", "nodes", "size")


def _rows(path: str) -> list[dict]:
    rows = []
    with open(path, newline="") as handle:
        for raw in csv.DictReader(handle):
            if raw["source"] != "vTrain":
                continue
            tp, pp, dp, mbs, gbs, gpus = (int(raw[k]) for k in ("tp", "pp", "dp", "mbs", "gbs", "gpus"))
            rows.append({"tp": tp, "pp": pp, "dp": dp, "mbs": mbs, "m": gbs // (mbs * dp), "nodes": gpus // 8,
                         "size": raw["name"].split()[0], "error_pct": float(raw["error_pct"]), "gbs": gbs,
                         "measured_s": float(raw["measured_s"]), "predicted_s": float(raw["predicted_s"])})
    return rows


def _table(rows: list[dict], key: str) -> list[str]:
    groups = defaultdict(list)
    for row in rows:
        groups[row[key]].append(row["error_pct"])
    lines = [f"| {key} | runs | mean signed % | least .. most abs error % |", "|---|---|---|---|"]
    for value in sorted(groups, key=lambda v: (isinstance(v, str), v)):
        errs = groups[value]
        lines.append(f"| {value} | {len(errs)} | {statistics.mean(errs):.1f} | {min(errs, key=abs):.1f} .. "
                     f"{max(errs, key=abs):.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/validation/published")
    args = parser.parse_args(argv)
    source = os.path.join(args.out, "multinode.csv")
    if not os.path.isfile(source):
        print(f"error: {source} not found (run benchmarks/published_multinode.py first)", file=sys.stderr)
        return 2
    rows = _rows(source)
    if not rows:
        print(f"error: {source} has no vTrain rows", file=sys.stderr)
        return 2
    errs = [r["error_pct"] for r in rows]
    lines = ["# vTrain multi-node residuals (zero-shot)", "",
             f"Command: `python benchmarks/multinode_residuals.py --out {args.out}` (groups {source}; fits nothing).",
             "Machine: any (reads a committed CSV).", "",
             f"{len(rows)} runs: mean |error| {statistics.mean(abs(e) for e in errs):.1f}%, "
             f"signed {statistics.mean(errs):.1f}%.", ""]
    for key in GROUPS:
        lines += _table(rows, key) + [""]
    lines += ["## Per (size, dp, tp, pp)", ""] + _cells(rows) + [""]
    target = os.path.join(args.out, "residuals.md")
    tmp = target + ".tmp"
    with open(tmp, "w") as handle:
        handle.write("\n".join(lines))
    os.replace(tmp, target)
    print(target)
    return 0


def _cells(rows: list[dict]) -> list[str]:
    cells = defaultdict(list)
    for row in rows:
        cells[(row["size"], row["dp"], row["tp"], row["pp"])].append(row["error_pct"])
    lines = ["| size | dp | tp | pp | runs | mean signed % |", "|---|---|---|---|---|---|"]
    for (size, dp, tp, pp), errs in sorted(cells.items(), key=lambda kv: (float(kv[0][0][:-1]), kv[0][1:])):
        lines.append(f"| {size} | {dp} | {tp} | {pp} | {len(errs)} | {statistics.mean(errs):.1f} |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
