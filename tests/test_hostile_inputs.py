"""Hostile inputs at the loaders and at ``pptune estimate`` in-process: exit 0 or 2, one line, never a traceback.

A seeded generator of its own (no hypothesis dependency) mutates spec strings, profile files and cluster files
with the values careless users and scripts produce: zero, negative, huge finite (1e308, 10^30), tiny (1e-300),
NaN/Infinity (Python's json writes and reads them), wrong types, duplicated or unknown keys, odd digits. Each
case must end in a pptune error (one line, exit 2) or a result (exit 0), quickly; issue 19 lists what did not.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import pytest

from pptune.cli import main
from pptune.errors import PptuneError
from pptune.hardware import GPU_PRESETS, load_cluster
from pptune.model.spec import PRESETS, parse_spec, resolve_spec
from pptune.profile.analytic import analytic_profile
from pptune.profile.schema import load_profile

SEED = 20260519
SPEC_CASES = 250
FILE_CASES = 120  # profiles and clusters each
CLI_CASES = 200
BUDGET_S = 20.0

HOSTILE_NUMBERS: list[Any] = [
    0, -1, 1, 2, 3, 7, 1.5, -0.0, 1e308, -1e308, 1e-300, 10**30, 2**63, 2**64 + 1, 10**9, math.nan, math.inf,
    -math.inf, True, False, None, "4", "", [], {}, [1, 2], {"a": 1},
    9.9e6, 2**49, 1e-12, 1e-3, 1e6, 2**20,  # just inside the bounds: the cost model must stay finite on them
]
HOSTILE_TEXT = ["0", "-1", "+4", "1_0", "4.0", "1e3", "abc", "", " ", "٣", "²", "9" * 40, "4,4", "=", "true",
                "maybe", "NaN", "inf", "0x10", "\x00", "é"]
SPEC_KEYS = ["layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "seq", "tied", "norm", "mlp", "position",
             "name", "depth", ""]
GOOD = {"layers": "2", "hidden": "64", "heads": "4", "seq": "64", "vocab": "128"}


def _spec_string(rng: random.Random) -> str:
    family = rng.choice(["gpt", "llama", "gpt", "bert", "", "GPT"])
    items = dict(GOOD)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(SPEC_KEYS)
        items[key] = rng.choice(HOSTILE_TEXT + ["2", "64", "128", "rmsnorm", "swiglu", "rope", "yes"])
    body = [f"{k}={v}" for k, v in items.items()]
    if rng.random() < 0.2:
        body.append(rng.choice(body))  # a duplicated key
    if rng.random() < 0.1:
        body.append(rng.choice(["garbage", "==", ",", "layers"]))
    rng.shuffle(body)
    return f"{family}:{','.join(body)}" if rng.random() < 0.95 else rng.choice(["gpt2-small", "hf:gpt2", "", ":"])


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a leaf or container of a JSON document (dict keys and list indexes)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, rng: random.Random, count: int) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(count):
        paths = _paths(doc)
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        roll = rng.random()
        if roll < 0.1 and isinstance(parent, dict):
            del parent[last]
        elif roll < 0.15 and isinstance(parent, dict):
            parent[f"unknown_{rng.randint(0, 9)}"] = 1
        else:
            parent[last] = rng.choice(HOSTILE_NUMBERS + HOSTILE_TEXT[:6])
    return doc


@pytest.fixture(scope="module")
def base_profile() -> dict:
    spec = parse_spec("gpt:layers=2,hidden=64,heads=4,seq=64,vocab=128")
    return analytic_profile(spec, GPU_PRESETS["local-cpu"], micro_batch_sizes=(1, 2)).to_dict()


BASE_CLUSTER = {"name": "fuzz", "gpu": {"name": "fuzz-gpu", "peak_bf16_tflops": 100.0, "memory_gib": 40.0,
                                        "hbm_gbps": 1000.0, "matmul_efficiency": 0.7},
                "gpus_per_node": 2, "num_nodes": 1, "intra_node_gbps": 100.0, "inter_node_gbps": 10.0,
                "intra_node_latency_us": 5.0, "inter_node_latency_us": 10.0, "per_step_overhead_ms": 1.0}


def _expect_pptune_error_or_ok(call) -> str:
    try:
        call()
    except PptuneError as exc:
        assert "\n" not in str(exc), str(exc)
        return "error"
    return "ok"


def test_spec_strings_fail_as_one_line_config_errors() -> None:
    rng = random.Random(SEED)
    outcomes = {"ok": 0, "error": 0}
    start = time.perf_counter()
    for _ in range(SPEC_CASES):
        text = _spec_string(rng)
        outcomes[_expect_pptune_error_or_ok(lambda text=text: resolve_spec(text))] += 1
    assert time.perf_counter() - start < BUDGET_S
    assert outcomes["ok"] and outcomes["error"]  # the generator reaches both sides


def test_profile_and_cluster_files_fail_as_one_line_schema_errors(tmp_path: Path, base_profile: dict) -> None:
    rng = random.Random(SEED + 1)
    start = time.perf_counter()
    outcomes = {"ok": 0, "error": 0}
    for i in range(FILE_CASES):
        profile = tmp_path / f"p{i}.json"
        profile.write_text(json.dumps(_mutate(base_profile, rng, rng.randint(1, 3))))  # NaN/Infinity as Python writes
        outcomes[_expect_pptune_error_or_ok(lambda p=profile: load_profile(p))] += 1
        cluster = tmp_path / f"c{i}.json"
        cluster.write_text(json.dumps(_mutate(BASE_CLUSTER, rng, rng.randint(1, 2))))
        outcomes[_expect_pptune_error_or_ok(lambda c=cluster: load_cluster(c))] += 1
    assert time.perf_counter() - start < BUDGET_S
    assert outcomes["ok"] and outcomes["error"]


def _run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own exit, should main ever let it through
            code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
    return code, err.getvalue()


def test_estimate_in_process_exits_0_or_2_without_traceback(tmp_path: Path, base_profile: dict) -> None:
    rng = random.Random(SEED + 2)
    start = time.perf_counter()
    codes: dict[int, int] = {}
    for i in range(CLI_CASES):
        kind = rng.random()
        if kind < 0.3:
            model = _spec_string(rng)
        elif kind < 0.75:  # mostly one mutation, often none: hostile values that pass reach the cost model
            model = str(tmp_path / f"p{i}.json")
            Path(model).write_text(json.dumps(_mutate(base_profile, rng, rng.choice([0, 1, 1, 1, 2]))))
        else:
            model = rng.choice([*list(PRESETS)[:3], "gpt:layers=2,hidden=64,heads=4,seq=64,vocab=128"])
        if rng.random() < 0.5:
            cluster = str(tmp_path / f"c{i}.json")
            Path(cluster).write_text(json.dumps(_mutate(BASE_CLUSTER, rng, rng.choice([0, 1, 1, 2]))))
        else:
            cluster = rng.choice(["local-cpu", "a100-80g", "local-cpu", "nope"])
        # Job flags within what estimate bounds today; huge batches wait for pptune.limits.check_job in the command.
        gbs = rng.choice(["8", "16", "32", "8", "16"]) if rng.random() < 0.85 else rng.choice(["0", "-4", "7", "abc"])
        argv = ["estimate", model, "--cluster", cluster, "--global-batch-size", gbs]
        if rng.random() < 0.5:
            argv += ["--pp", rng.choice(["1", "2", "2", "0"]), "--micro-batch-size", rng.choice(["1", "2", "2", "0"])]
        if rng.random() < 0.3:
            argv.append("--json")
        code, err = _run_cli(argv)
        codes[code] = codes.get(code, 0) + 1
        assert code in (0, 2), (argv, code, err)
        assert "Traceback" not in err, (argv, err)
        if code == 2:
            assert len(err.strip().splitlines()) <= 1 or err.startswith("usage:"), (argv, err)
    assert time.perf_counter() - start < BUDGET_S
    assert codes.get(0) and codes.get(2)
