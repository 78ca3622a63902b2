"""Hostile command lines, in-process: exit 0 or 2 (130 for Ctrl-C), one line, no traceback, nothing left behind.

The targeted tests pin one defect of issue 19 each (output paths, half-written directories, --resume of another
job, syntax errors); ``test_seeded_fuzz_of_the_cli`` then throws a fixed-seed stream of random and hostile flag
values, models, clusters, output paths and batch lines at ``estimate``, ``estimate --batch``, ``plan`` and
``plot`` and checks the same three promises on every case.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pptune.cli import main

TINY = "gpt:layers=2,hidden=64,heads=2,seq=32,vocab=100"
PLAN = ["plan", TINY, "--cluster", "a100-80g", "--gpus", "2", "--global-batch-size", "8", "--no-progress"]
DROP = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps=-all"]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # main must not let one escape; the assertion below says so
        code = f"SystemExit({exc.code})"
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(code, err: str, argv) -> None:
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every entry below ``path`` with its size and mtime (a snapshot to compare)."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plan") / "p"
    assert main([*PLAN, "--trials", "12", "--out", str(out), "--no-figures"]) == 0
    return out


def test_out_below_a_regular_file_is_one_line_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for argv in ([*PLAN, "--out", str(tmp_path / "file" / "p")],
                 ["profile", TINY, "--micro-batch-sizes", "1", "-o", str(tmp_path / "file" / "x.json")],
                 ["validate", "--published", "nope.csv", "--out", str(tmp_path / "file" / "v")],
                 ["calibrate", "x", "--cluster", "local-cpu", "-o", str(tmp_path / "file" / "c.json")]):
        code, _, err = _run(argv, capsys)
        _one_line(code, err, argv)
        assert "is a file, not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_profile_output_that_is_a_directory_is_refused(tmp_path, capsys):
    code, _, err = _run(["profile", TINY, "--micro-batch-sizes", "1", "-o", str(tmp_path)], capsys)
    _one_line(code, err, "profile -o DIR")
    assert "is a directory" in err


def _dropped(tmp_path: Path) -> bool:
    """Whether this process can run a child that honours file modes (root without CAP_DAC_OVERRIDE, or a user)."""
    if shutil.which("setpriv") is None:
        return False
    probe = tmp_path / "ro-probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        cmd = [*DROP, sys.executable, "-c", f"open({str(probe / 'x')!r}, 'w')"] if os.geteuid() == 0 else \
            [sys.executable, "-c", f"open({str(probe / 'x')!r}, 'w')"]
        return subprocess.run(cmd, capture_output=True).returncode != 0
    finally:
        probe.chmod(0o755)
        shutil.rmtree(probe)


def test_replanning_under_a_read_only_parent_keeps_the_old_plan_and_study(tmp_path, plan_dir):
    """The worst case of issue 19: the old study.db went from 12 trials to 5 before a traceback."""
    if not _dropped(tmp_path):
        pytest.skip("cannot run a child that honours file modes here")
    parent = tmp_path / "ro"
    parent.mkdir()
    shutil.copytree(plan_dir, parent / "p")
    before = _tree(parent)
    parent.chmod(0o555)
    try:
        prefix = DROP if os.geteuid() == 0 else []
        cmd = [*prefix, sys.executable, "-m", "pptune", *PLAN, "--trials", "5", "--out", str(parent / "p")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DS_ACCELERATOR": "cpu"})
    finally:
        parent.chmod(0o755)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "cannot write in" in proc.stderr
    assert _tree(parent) == before


def test_a_failure_while_drawing_leaves_the_old_plan_whole(tmp_path, capsys, plan_dir, monkeypatch):
    out = tmp_path / "p"
    shutil.copytree(plan_dir, out)
    before = _tree(out)
    import pptune.draw.plan as draw

    def boom(*_args, **_kwargs):
        raise MemoryError

    monkeypatch.setattr(draw, "save_figure", boom)
    with pytest.raises(MemoryError):
        main([*PLAN, "--trials", "5", "--out", str(out)])
    assert _tree(out) == before  # study.db still the old 12 trials, plan.json and ranking.csv the old plan
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no .p.tmp-* left beside it
    with pytest.raises(MemoryError):
        main([*PLAN, "--trials", "5", "--out", str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()


def test_ctrl_c_during_the_search_leaves_no_new_directory(tmp_path, capsys, monkeypatch):
    import pptune.planner.search as search

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(search, "run_study", interrupted)
    monkeypatch.setattr(search, "_run_exhaustive", interrupted)  # a space within --trials is evaluated whole
    code, _, err = _run([*PLAN, "--out", str(tmp_path / "a" / "b" / "p")], capsys)
    assert code == 130 and err.strip() == "pptune plan: interrupted"
    assert list(tmp_path.iterdir()) == []  # neither p nor the folders made for it


def test_resume_of_a_study_made_for_another_job_is_refused(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    common = ["--trials", "6", "--storage", url, "--study-name", "S", "--no-figures", "--no-progress"]
    assert main(["plan", TINY, "--cluster", "a100-80g", "--gpus", "8", "--global-batch-size", "16", *common,
                 "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    before = (tmp_path / "s.db").read_bytes()
    argv = ["plan", TINY, "--cluster", "local-cpu", "--gpus", "2", "--global-batch-size", "16", *common, "--resume",
            "--out", str(tmp_path / "b")]
    code, _, err = _run(argv, capsys)
    _one_line(code, err, argv)
    assert "made for another job" in err and "cluster 'a100-80g' (now 'local-cpu')" in err and "gpus 8 (now 2)" in err
    assert (tmp_path / "s.db").read_bytes() == before and not (tmp_path / "b").exists()


@pytest.mark.parametrize("argv", [
    ["plan", TINY, "--cluster", "x", "--gpus", "1", "--global-batch-size", "1", "--foo"],
    ["plan", "--gpus", "x"],
    ["estimate", "--nope=3"],
    ["bogus"],
    [],
])
def test_syntax_errors_are_one_line_naming_the_subcommand(argv, capsys):
    code, out, err = _run(argv, capsys)
    _one_line(code, err, argv)
    assert out == "" and "usage:" not in err
    prog = f"pptune {argv[0]}" if argv and argv[0] in ("plan", "estimate") else "pptune"
    assert err.startswith(f"{prog}: error: ") and err.rstrip().endswith(f"(see {prog} --help)")
    if "--foo" in argv:
        assert "unrecognized argument --foo" in err


# ---------------------------------------------------------------------------------------------------------------
# The seeded fuzz: fixed seed, bounded time, every case checked for exit code, one line and leftovers.

SEED = 19
BUDGET_S = 30.0
NUMBERS = ["1", "2", "2", "4", "8", "0", "-1", "3", "abc", "", "1e3", "99999999999", "4294967297", "007", " 2"]
MODELS = [TINY, TINY, TINY, "gpt:layers=0,hidden=64,heads=2", "gpt:layers=2,layers=3,hidden=64,heads=2",
          "gpt:layers=2,hidden=abc,heads=2", "gpt:layers=1000000000,hidden=64,heads=2", "hf:gpt2", "", "nope",
          "gpt:", "gpt:layers=2,hidden=64,heads=3", "llama:layers=2,hidden=64,heads=2,seq=32,vocab=100"]
CLUSTERS = ["a100-80g", "local-cpu", "local-cpu", "nope", "", "{}"]
VALUES = [None, True, False, 0, -1, 1, 2, 2, 4, 1.5, "2", "no", [], {}, 10**12, 1e308, "x" * 50, [1], "full",
          "none", "uniform", "type:[", "zb_h1", "interleaved_1f1b", "bf16"]


def _flag_value(rng: random.Random) -> str:
    return rng.choice(["1", "2"]) if rng.random() < 0.6 else rng.choice(NUMBERS)


def _pick(rng: random.Random, good: list[str], bad: list[str], p_good: float = 0.6) -> str:
    return rng.choice(good) if rng.random() < p_good else rng.choice(bad)


def _out_path(rng: random.Random, root: Path, i: int) -> Path:
    kind = rng.random()
    if kind < 0.7:
        return root / f"out{i}" / "p"
    if kind < 0.75:
        return root / "afile" / f"p{i}"  # below a regular file
    if kind < 0.85:
        return root / "foreign"  # an existing directory that is not a plan
    if kind < 0.95:
        return root / "afile"  # an existing file
    return root / "." / ".."


def _batch_line(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.08:
        return b""
    if roll < 0.14:
        return rng.choice([b"not json", b"[1, 2]", b"\xff\xfe", b"{", b"null", b"[" * 3000, b"1" * 5000])
    keys = ["model", "cluster", "gpus", "tp", "pp", "dp", "micro_batch_size", "global_batch_size", "schedule",
            "vpp", "zero", "recompute", "partition", "dtype", "target", "sequence_parallel", "colour"]
    item = {"global_batch_size": rng.choice([8, 16, 32])}
    for key in rng.sample(keys, rng.choice([0, 1, 1, 2, 3])):
        item[key] = rng.choice(VALUES + ([TINY] if key == "model" else []))
    return json.dumps(item).encode()


def test_seeded_fuzz_of_the_cli(tmp_path, capsys, plan_dir):
    rng = random.Random(SEED)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "mine.txt").write_text("keep me")
    plots = tmp_path / "plots"
    plots.mkdir()
    start = time.perf_counter()
    codes: dict[str, dict] = {}
    cases = 0

    def check(name: str, argv: list[str], watched: list[Path]) -> tuple[int, str]:
        nonlocal cases
        before = {str(w): _tree(w) if w.is_dir() else w.exists() for w in watched}
        siblings = {str(w): sorted(os.listdir(w.parent)) if w.parent.is_dir() else None for w in watched}
        code, out, err = _run(argv, capsys)
        cases += 1
        codes.setdefault(name, {}).setdefault(code, 0)
        codes[name][code] += 1
        assert code in (0, 2), (argv, code, err)
        assert "Traceback" not in err and "internal error" not in out, (argv, err, out)
        if code == 2:
            assert err.strip() and (name == "batch" or len(err.strip().splitlines()) == 1), (argv, err)
            for w in watched:  # nothing new, nothing changed, no temporary siblings
                assert (_tree(w) if w.is_dir() else w.exists()) == before[str(w)], (argv, w)
                assert (sorted(os.listdir(w.parent)) if w.parent.is_dir() else None) == siblings[str(w)], (argv, w)
        return code, out

    while time.perf_counter() - start < BUDGET_S * 0.6 and cases < 600:
        roll = rng.random()
        if roll < 0.45:  # estimate with hostile flags
            argv = ["estimate", _pick(rng, [TINY], MODELS), "--cluster", _pick(rng, CLUSTERS[:2], CLUSTERS, 0.7),
                    "--global-batch-size", _pick(rng, ["8", "16"], NUMBERS)]
            for flag in rng.sample(["--tp", "--pp", "--dp", "--micro-batch-size", "--vpp", "--gpus", "--zero"],
                                   rng.choice([0, 1, 2])):
                argv += [flag, _flag_value(rng)]
            if rng.random() < 0.2:
                argv += rng.choice([["--recompute", "every:0"], ["--partition", "type:("], ["--json"], ["--bogus"],
                                    ["--schedule", "zb_h1"], ["--recompute", "full"]])
            check("estimate", argv, [])
        elif roll < 0.65:  # estimate --batch
            path = tmp_path / f"b{cases}.jsonl"
            lines = [_batch_line(rng) for _ in range(rng.randint(1, 6))]
            path.write_bytes(b"\n".join(lines) + (b"\n" if rng.random() < 0.7 else b""))
            _, printed = check("batch", ["estimate", TINY, "--cluster", "local-cpu", "--batch", str(path)], [])
            rows = [json.loads(line) for line in printed.splitlines()]
            expected = len(path.read_bytes().splitlines())  # a final newline ends the last line, adds none
            assert [r["line"] for r in rows] == list(range(1, expected + 1)), (lines, printed)  # one per line
        elif roll < 0.9:  # plan --exhaustive --no-figures with hostile flags and outputs
            out = _out_path(rng, tmp_path, cases)
            argv = ["plan", _pick(rng, [TINY], MODELS[:8]), "--cluster", _pick(rng, CLUSTERS[:2], CLUSTERS[:4], 0.8),
                    "--gpus", rng.choice(["1", "2", "2", "4", "0", "3", "x", "99999999999"]),
                    "--global-batch-size", rng.choice(["8", "16", "8", "0", "7", "100000000000"]),
                    "--exhaustive", "--no-figures", "--no-progress", "--out", str(out)]
            if rng.random() < 0.3:
                argv += rng.choice([["--tp", "2"], ["--pp", "3"], ["--max-micro-batch-size", "0"],
                                    ["--ds-override", "optimizer.params.lr=abc"], ["--ds-override", "noequals"],
                                    ["--micro-batch-size", "99999999"], ["--recompute", "bogus"], ["--top", "0"]])
            check("plan", argv, [out])
        else:  # plot of a damaged copy of a plan
            target = plots / f"p{cases}"
            shutil.copytree(plan_dir, target)
            damage = rng.choice(["ranking", "ranking-empty", "plan-json", "none-dir", "file"])
            if damage == "ranking":
                text = (target / "ranking.csv").read_bytes()
                (target / "ranking.csv").write_bytes(text[: rng.randint(0, len(text) - 1)])
            elif damage == "ranking-empty":
                (target / "ranking.csv").write_text("")
            elif damage == "plan-json":
                text = (target / "plan.json").read_bytes()
                (target / "plan.json").write_bytes(text[: rng.randint(0, len(text) - 1)])
            elif damage == "none-dir":
                shutil.rmtree(target)
            else:
                shutil.rmtree(target)
                target.write_text("x")
            check("plot", ["plot", str(target)], [target])
    assert time.perf_counter() - start < BUDGET_S, codes
    print(f"fuzz: {cases} cases, exit codes per command {codes}")
    assert cases >= 100 and all(2 in c for c in codes.values()), codes
    assert codes["estimate"].get(0) and codes["plan"].get(0), codes  # the stream reaches real work too
