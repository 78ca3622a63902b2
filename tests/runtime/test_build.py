"""What a run builds: layer specs of the plan's model, the run config, synthetic data, the plain-engine model."""

from __future__ import annotations

import pytest
import torch

from pptune.errors import ConfigError
from pptune.runtime.build import (
    LOG_NEVER,
    PlainModel,
    build_module,
    checkpointable_layers,
    model_parts,
    run_config,
    synthetic_batches,
)
from pptune.runtime.plan_files import load_run_plan


def test_spec_dict_gives_layer_specs(make_plan) -> None:
    from deepspeed.pipe import LayerSpec

    parts = model_parts(load_run_plan(make_plan()))
    assert len(parts.layers) == 6 and all(isinstance(layer, LayerSpec) for layer in parts.layers)
    assert parts.vocab_size == 128
    logits, labels = torch.zeros(2, 3, 128), torch.zeros(2, 3, dtype=torch.int64)
    assert parts.loss_fn(logits, labels).item() == pytest.approx(torch.log(torch.tensor(128.0)).item())


def test_spec_string_and_errors(make_plan) -> None:
    plan = load_run_plan(make_plan("s", model="gpt:layers=2,hidden=32,heads=2,vocab=64,seq=32"))
    assert len(model_parts(plan).layers) == 4 and model_parts(plan).vocab_size == 64
    long = load_run_plan(make_plan("long", model="gpt:layers=2,hidden=32,heads=2,vocab=64,seq=16"))
    with pytest.raises(ConfigError, match="seq_len 32 is longer than its 16 learned positions"):
        model_parts(long)
    with pytest.raises(ConfigError, match="unknown model"):
        model_parts(load_run_plan(make_plan("u", model="no-such-model")))


def test_tensor_parallel_plans_tp_cannot_split_are_refused_before_any_process_group(make_plan) -> None:
    # No torch.distributed here: the checks come before DeepSpeed's topology or grid is touched.
    odd_heads = {"name": "one-head", "num_layers": 2, "hidden_size": 64, "num_heads": 1, "ffn_hidden_size": 128,
                 "vocab_size": 128, "seq_len": 32}
    with pytest.raises(ConfigError, match="num_heads 1 is not divisible by tp 2"):
        build_module(load_run_plan(make_plan("heads", tp=2, model=odd_heads)))
    with pytest.raises(ConfigError, match="tp 2 needs a pptune model"):
        build_module(load_run_plan(make_plan("hf", tp=2, model="hf:gpt2")))
    with pytest.raises(ConfigError, match="pipe_partitioned true"):
        build_module(load_run_plan(make_plan("sp", tp=2, sequence_parallel=True, ds_pipeline={"pipe_partitioned": True})))


def test_run_config_keeps_the_plan_and_silences_periodic_logs(make_plan) -> None:
    plan = load_run_plan(make_plan())
    cfg = run_config(plan, ds_timers=True)
    assert cfg["wall_clock_breakdown"] is True and cfg["steps_per_print"] == LOG_NEVER
    assert plan.ds_config["wall_clock_breakdown"] is False and plan.ds_config["steps_per_print"] == 10  # not mutated
    assert run_config(plan, ds_timers=False)["wall_clock_breakdown"] is False
    assert {k: v for k, v in cfg.items() if k not in ("wall_clock_breakdown", "steps_per_print")} == {
        k: v for k, v in plan.ds_config.items() if k not in ("wall_clock_breakdown", "steps_per_print")}


def test_synthetic_batches_are_shifted_tokens() -> None:
    data = synthetic_batches(vocab_size=50, micro_batch_size=3, seq_len=8, seed=7)
    first = [next(data) for _ in range(9)]
    inputs, labels = first[0]
    assert inputs.shape == labels.shape == (3, 8) and inputs.dtype == labels.dtype == torch.int64
    assert torch.equal(inputs[:, 1:], labels[:, :-1])  # labels are the next tokens
    assert int(inputs.max()) < 50 and int(inputs.min()) >= 0
    assert torch.equal(first[8][0], inputs)  # 8 distinct batches, cycled
    again = next(synthetic_batches(vocab_size=50, micro_batch_size=3, seq_len=8, seed=7))
    assert torch.equal(again[0], inputs)


def test_plain_model_matches_the_layers(make_plan) -> None:
    plan = load_run_plan(make_plan("z2", pp=1, dp=2, zero=2, partition_method="parameters"))
    torch.manual_seed(0)
    module, vocab = build_module(plan)
    assert isinstance(module, PlainModel) and vocab == 128 and len(module.layers) == 6
    inputs, labels = next(synthetic_batches(vocab_size=vocab, micro_batch_size=2, seq_len=32))
    x = inputs
    for layer in module.layers:
        x = layer(x)
    assert torch.allclose(module(inputs, labels), module.loss_fn(x, labels))


def test_recompute_skips_the_layer_fed_token_ids(make_plan) -> None:
    # DeepSpeed's default would checkpoint the embedding too, and backward then fails on stage 0.
    parts = model_parts(load_run_plan(make_plan(checkpoint_interval=1)))
    assert checkpointable_layers(parts.layers) == ["TransformerBlockPipe"]
    assert checkpointable_layers([]) == []
