"""Which tp > 1 plans the tensor-parallel runtime accepts (torch-free checks the CLI runs before launching)."""

from __future__ import annotations

import json

import pytest

from pptune.errors import ConfigError, SchemaError
from pptune.model.spec import TransformerSpec
from pptune.runtime.plan_files import load_run_plan
from pptune.runtime.topology import check_tensor_parallel, tp_problem

SPEC = TransformerSpec(name="t", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, ffn_hidden_size=96,
                       vocab_size=100, seq_len=30)


@pytest.mark.parametrize(("tp", "sp", "problem"), [
    (1, False, None), (2, False, None), (2, True, None),
    (4, False, "num_kv_heads 2 is not divisible by tp 4"),
    (3, False, "num_heads 4 is not divisible by tp 3"),
])
def test_tp_problem(tp: int, sp: bool, problem: str | None) -> None:
    found = tp_problem(SPEC, tp=tp, seq_len=30, sequence_parallel=sp)
    assert found == problem if problem is None else problem in found


def test_sequence_parallel_needs_the_sequence_divisible() -> None:
    assert "seq_len 31 is not divisible by tp 2" in tp_problem(SPEC, tp=2, seq_len=31, sequence_parallel=True)


def test_plan_checks(make_plan) -> None:
    assert check_tensor_parallel(load_run_plan(make_plan("tp1"))) is None
    assert check_tensor_parallel(load_run_plan(make_plan("tp2", tp=2))).name == "tiny"
    with pytest.raises(ConfigError, match="sequence_parallel needs tp > 1"):
        check_tensor_parallel(load_run_plan(make_plan("sp1", sequence_parallel=True)))
    with pytest.raises(ConfigError, match="vocab_size 3 is smaller than tp 4"):
        small = {"name": "v", "num_layers": 1, "hidden_size": 64, "num_heads": 4, "ffn_hidden_size": 64,
                 "vocab_size": 3, "seq_len": 32}
        check_tensor_parallel(load_run_plan(make_plan("v", tp=4, model=small)))


def test_sequence_parallel_field_must_be_a_boolean(make_plan) -> None:
    path = make_plan()
    data = json.loads((path / "pipeline.json").read_text())
    data["sequence_parallel"] = "yes"
    (path / "pipeline.json").write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="'sequence_parallel': expected true or false"):
        load_run_plan(path)
