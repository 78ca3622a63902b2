"""Megatron-DeepSpeed flags for DeepSpeed plans: what they say, and the checker's rules (each can fail)."""

from __future__ import annotations

import pytest

from pptune.emit.deepspeed import ds_config
from pptune.emit.megatron_deepspeed import check_megatron_deepspeed_args, megatron_deepspeed_args
from pptune.errors import ConfigError
from pptune.model.spec import PRESETS
from pptune.parallel import ParallelConfig

PIPE = ParallelConfig(tp=2, pp=2, dp=2, micro_batch_size=2, num_microbatches=4, zero_stage=1, recompute="every:2")


def _checked(config: ParallelConfig, spec=PRESETS["gpt2-small"]) -> list[str]:
    args = megatron_deepspeed_args(config, spec)
    check_megatron_deepspeed_args(args, world_size=config.world_size, ds_config=ds_config(config))
    return args


def test_pipeline_plan_flags():
    text = " ".join(_checked(PIPE))
    assert text.startswith("--deepspeed --deepspeed_config ds_config.json --tensor-model-parallel-size 2 "
                           "--pipeline-model-parallel-size 2 --zero-stage 1 --micro-batch-size 2 --global-batch-size 16")
    assert "--checkpoint-activations --checkpoint-num-layers 2 --deepspeed-activation-checkpointing" in text
    assert "--no-pipeline-parallel" not in text and text.endswith("--use-flash-attn-v2 --bf16")


def test_plain_engine_plan_and_llama_shape():
    config = ParallelConfig(tp=2, pp=1, dp=4, micro_batch_size=1, num_microbatches=2, zero_stage=3, dtype="fp16")
    text = " ".join(_checked(config, PRESETS["llama2-70b"]))
    assert "--pipeline-model-parallel-size 1 --no-pipeline-parallel --zero-stage 3" in text
    assert "--num-key-value-heads 8" in text and "--normalization rmsnorm --disable-bias-linear --swiglu" in text
    assert "--use-rotary-position-embeddings --no-position-embedding --untie-embeddings-and-output-weights" in text
    assert "--checkpoint-activations" not in text and text.endswith("--fp16")
    unfused = _checked(config, PRESETS["llama2-70b"].replace(attention="unfused"))
    assert "--use-flash-attn-v2" not in unfused


def test_only_deepspeed_plans():
    with pytest.raises(ConfigError, match="for DeepSpeed plans"):
        megatron_deepspeed_args(PIPE.replace(target="megatron"), PRESETS["gpt2-small"])


def _swap(args: list[str], flag: str, value: str | None) -> list[str]:
    """``args`` with ``flag``'s value replaced (None: the flag removed)."""
    i = args.index(flag)
    has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
    rest = args[i + 1 + has_value:]
    return args[:i] + ([] if value is None else [flag, value] if value else [flag]) + rest


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: _swap(a, "--deepspeed", None), "GPTModelPipe runs under --deepspeed --deepspeed_config FILE"),
    (lambda a: _swap(a, "--zero-stage", "2"), "ZeRO stage 2 with GPTModelPipe: DeepSpeed's pipeline engine allows only"),
    (lambda a: [*a, "--no-pipeline-parallel"], "--no-pipeline-parallel needs --pipeline-model-parallel-size 1, got 2"),
    (lambda a: _swap(a, "--tensor-model-parallel-size", "3"), "world size 8 is not divisible by tp 3 * pp 2"),
    (lambda a: _swap(a, "--global-batch-size", "18"), "global batch 18 is not divisible by micro batch 2 * dp 2"),
    (lambda a: _swap(a, "--num-attention-heads", "10"), "hidden size 768 is not divisible by 10 attention heads"),
    (lambda a: _swap(a, "--max-position-embeddings", "512"), "max position embeddings 512 < seq length 1024"),
    (lambda a: _swap(a, "--checkpoint-activations", None), "--checkpoint-num-layers has no effect without"),
    (lambda a: [*a, "--fp16"], "--bf16 and --fp16 are exclusive"),
])
def test_checker_rules(change, message):
    args = megatron_deepspeed_args(PIPE, PRESETS["gpt2-small"])
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        check_megatron_deepspeed_args(change(args), world_size=8)


def test_ds_config_must_say_what_the_flags_say():
    args = megatron_deepspeed_args(PIPE, PRESETS["gpt2-small"])
    with pytest.raises(ConfigError, match="ds_config.json train_batch_size is 32 but the flags mean 16"):
        check_megatron_deepspeed_args(args, world_size=8, ds_config=ds_config(PIPE.replace(num_microbatches=8)))
    with pytest.raises(ConfigError, match="ds_config.json zero_optimization.stage is 0 but the flags mean 1"):
        check_megatron_deepspeed_args(args, world_size=8, ds_config=ds_config(PIPE.replace(zero_stage=0)))
    with pytest.raises(ConfigError, match="ds_config.json bf16.enabled is False but the flags mean True"):
        check_megatron_deepspeed_args(args, world_size=8, ds_config=ds_config(PIPE.replace(dtype="fp16")))
