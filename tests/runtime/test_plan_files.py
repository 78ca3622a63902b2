"""load_run_plan: reads pipeline.json, ds_config.json and plan.json's estimate; bad plans fail on one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pptune.errors import ConfigError, PptuneError, SchemaError
from pptune.runtime.plan_files import load_run_plan


def test_reads_the_plan(make_plan) -> None:
    plan = load_run_plan(make_plan())
    assert (plan.pp, plan.tp, plan.dp, plan.world_size) == (2, 1, 1, 2)
    assert plan.boundaries == (0, 2, 6) and plan.partition_method == "explicit"
    assert (plan.micro_batch_size, plan.num_microbatches, plan.zero_stage, plan.dtype) == (2, 4, 0, "fp32")
    assert plan.predicted_step_ms == 50.0
    assert plan.model_name == "tiny" and plan.engine == "pipeline"


def test_engine_kind_and_optional_estimate(make_plan) -> None:
    plain = load_run_plan(make_plan("z2", pp=1, dp=2, zero=2, partition_method="parameters", predicted_ms=None))
    assert plain.engine == "plain" and plain.predicted_step_ms is None and plain.boundaries is None
    assert load_run_plan(make_plan("z1", pp=1, dp=2, zero=1, partition_method="parameters")).engine == "pipeline"


def _edit(path: Path, name: str, change) -> Path:
    data = json.loads((path / name).read_text())
    change(data)
    (path / name).write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("name", "change", "error", "message"),
    [
        ("pipeline.json", lambda d: d.update(boundaries=[0, 6]), ConfigError, "boundaries [0, 6] have 2 entries; pp 2 needs 3"),
        ("pipeline.json", lambda d: d.update(num_stages=4), ConfigError, "num_stages 4 != topology pp 2"),
        ("pipeline.json", lambda d: d.pop("boundaries"), SchemaError, "'explicit' needs a 'boundaries' list"),
        ("pipeline.json", lambda d: d.update(topology=[2, 1, 1]), SchemaError, "field 'topology'"),
        ("pipeline.json", lambda d: d.update(seq_len=0), SchemaError, "field 'seq_len': expected an integer >= 1"),
        ("pipeline.json", lambda d: d.pop("model"), SchemaError, "field 'model'"),
        ("ds_config.json", lambda d: d.update(train_batch_size=7), ConfigError, "train_batch_size 7 != micro 2"),
        ("ds_config.json", lambda d: d.pop("gradient_accumulation_steps"), SchemaError, "gradient_accumulation_steps"),
        ("plan.json", lambda d: d["estimate"].update(step_time_ms=-3), SchemaError, "estimate.step_time_ms"),
    ],
)
def test_bad_plans(make_plan, name: str, change, error: type[PptuneError], message: str) -> None:
    path = _edit(make_plan(), name, change)
    with pytest.raises(error) as info:
        load_run_plan(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_files(tmp_path: Path, make_plan) -> None:
    with pytest.raises(SchemaError, match="not a directory"):
        load_run_plan(tmp_path / "nowhere")
    path = make_plan()
    (path / "ds_config.json").unlink()
    with pytest.raises(SchemaError, match="ds_config.json: missing"):
        load_run_plan(path)
    (path / "pipeline.json").write_text("{oops")
    with pytest.raises(SchemaError, match="not valid JSON"):
        load_run_plan(path)


def test_fields_of_pptune_plan(make_plan) -> None:
    # pptune plan writes the spec beside the model's name (a profile file's name is not buildable) and the engine.
    spec = {"name": "from-spec", "num_layers": 2, "hidden_size": 32, "num_heads": 2, "ffn_hidden_size": 128,
            "vocab_size": 64, "seq_len": 32}
    path = _edit(make_plan(), "pipeline.json", lambda d: d.update(model="profiles/x.json", model_spec=spec,
                                                                   engine="pipeline", vpp=1))
    assert load_run_plan(path).model == spec
    for change, message in ((dict(engine="megatron"), "engine 'megatron'"), (dict(vpp=2, boundaries=[0, 1, 2, 3, 6]),
                                                                             "vpp 2")):
        bad = _edit(make_plan(f"bad{len(message)}"), "pipeline.json", lambda d, c=change: d.update(c))
        with pytest.raises(ConfigError, match=message):
            load_run_plan(bad)
