"""ds_config: DeepSpeed's own DeepSpeedConfig accepts every config of the DeepSpeed space at its real dp."""

from __future__ import annotations

import os

import pytest

from pptune.emit.deepspeed import check_overrides, ds_config, engine_kind, parse_override
from pptune.errors import ConfigError
from pptune.parallel import ParallelConfig
from pptune.planner import build_space

os.environ.setdefault("DS_ACCELERATOR", "cpu")


class FakeMpu:
    """What DeepSpeedConfig asks of an mpu: only ``get_data_parallel_world_size`` (deepspeed/runtime/config.py)."""

    def __init__(self, dp: int) -> None:
        self.dp = dp

    def get_data_parallel_world_size(self) -> int:
        return self.dp


def _validate(cfg: dict, dp: int):
    from deepspeed.runtime.config import DeepSpeedConfig

    return DeepSpeedConfig(cfg, mpu=FakeMpu(dp))


def _space_configs():
    """Every distinct ds_config of three DeepSpeed spaces (dp 1..16, bf16/fp16/fp32, all ZeRO stages, recompute)."""
    seen = {}
    for gpus, gbs, dtype in ((8, 32, "bf16"), (16, 48, "fp16"), (4, 8, "fp32")):
        space = build_space(num_blocks=12, gpus=gpus, gpus_per_node=8, global_batch_size=gbs, num_heads=12, dtype=dtype)
        for c in space.configs():
            key = (c.dp, c.micro_batch_size, c.num_microbatches, c.zero_stage, c.dtype, c.recompute, c.tp > 1, c.pp > 1)
            seen.setdefault(key, c)
    return list(seen.values())


def test_every_space_config_passes_deepspeed_config(ds_dist):
    configs = _space_configs()
    assert len(configs) > 100
    for c in configs:
        cfg = ds_config(c)
        parsed = _validate(cfg, c.dp)
        assert parsed.world_size == c.dp  # the mpu's dp, not the GPU count, is what the batch rule uses
        assert parsed.train_batch_size == c.global_batch_size
        assert parsed.gradient_accumulation_steps == c.num_microbatches
        assert parsed.zero_optimization_stage == c.zero_stage
        assert parsed.bfloat16_config.enabled == (c.dtype == "bf16")
        assert parsed.float16_config.enabled == (c.dtype == "fp16")
        if engine_kind(c) == "pipeline":
            # PipelineEngine asserts ZeRO < 2 (runtime/pipe/engine.py) for any stage count
            assert parsed.zero_optimization_stage < 2
            assert parsed.pipeline["activation_checkpoint_interval"] == c.recompute_interval
            # partitioned sends only for tp > 1 without sequence parallelism (pptune.runtime.topology)
            assert parsed.pipeline["pipe_partitioned"] is (c.tp > 1 and not c.sequence_parallel)


def test_deepspeed_config_rejects_a_wrong_dp(ds_dist):
    c = ParallelConfig(tp=1, pp=2, dp=4, micro_batch_size=2, num_microbatches=4)
    _validate(ds_config(c), 4)
    with pytest.raises(AssertionError, match="train_batch_size is not equal"):
        _validate(ds_config(c), 2)


def test_no_jit_build_happened(ds_dist):
    if ds_dist is not None:
        _validate(ds_config(ParallelConfig(dp=2)), 2)
        assert not any(ds_dist.iterdir()), "init_distributed compiled an extension"


def test_precision_and_zero_sections():
    bf16_z1 = ds_config(ParallelConfig(pp=2, dp=2, zero_stage=1))
    assert bf16_z1["bf16"] == {"enabled": True} and bf16_z1["data_types"] == {"grad_accum_dtype": "fp32"}
    bf16_z0 = ds_config(ParallelConfig(pp=2, dp=2, zero_stage=0))
    assert "data_types" not in bf16_z0  # DeepSpeed raises "unsupported mix" for fp32 accumulation without ZeRO
    fp16 = ds_config(ParallelConfig(dtype="fp16"))
    assert fp16["fp16"]["enabled"] and fp16["fp16"]["loss_scale"] == 0 and "bf16" not in fp16
    fp32 = ds_config(ParallelConfig(dtype="fp32"))
    assert "bf16" not in fp32 and "fp16" not in fp32
    assert fp32["optimizer"]["params"]["torch_adam"] is True  # no fused_adam JIT build
    full = ds_config(ParallelConfig(pp=2, recompute="full"))
    assert full["pipeline"] == {"activation_checkpoint_interval": 1, "pipe_partitioned": False, "grad_partitioned": False}
    assert set(full["pipeline"]) <= {"activation_checkpoint_interval", "pipe_partitioned", "grad_partitioned",
                                     "use_reentrant"}  # only keys PipelineEngine reads


def test_refuses_what_deepspeed_refuses():
    with pytest.raises(ConfigError, match="megatron"):
        ds_config(ParallelConfig(pp=4, schedule="interleaved_1f1b", vpp=2, target="megatron"))
    with pytest.raises(ConfigError, match="ZeRO stage 2 with pp 2"):
        ds_config(_bypass(pp=2, zero_stage=2))
    with pytest.raises(ConfigError, match="1f1b only"):
        ds_config(_bypass(pp=2, schedule="zb_h1"))


def _bypass(**kw) -> ParallelConfig:
    """A ParallelConfig that skips validation (ParallelConfig itself refuses ZeRO 2 with pp > 1)."""
    c = object.__new__(ParallelConfig)
    for f in ParallelConfig.__dataclass_fields__:
        object.__setattr__(c, f, kw.get(f, ParallelConfig.__dataclass_fields__[f].default))
    return c


def test_overrides():
    cfg = ds_config(ParallelConfig(dp=2), overrides={"optimizer.params.lr": 3e-4, "steps_per_print": 1})
    assert cfg["optimizer"]["params"]["lr"] == 3e-4 and cfg["steps_per_print"] == 1
    assert parse_override("optimizer.params.betas=[0.9, 0.99]") == ("optimizer.params.betas", [0.9, 0.99])
    assert parse_override("optimizer.type=Adam") == ("optimizer.type", "Adam")
    for bad in ("train_batch_size", "zero_optimization.stage", "zero_optimization", "bf16.enabled"):
        with pytest.raises(ConfigError, match="would change what the plan is estimated for"):
            check_overrides({bad: 1})
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("lr")


@pytest.mark.parametrize(("text", "fragment"), [
    ("optimizer.params.lr=abc", "lr must be a number"),
    ('optimizer.params.lr="abc"', "lr must be a number"),
    ("optimizer.params.lr=true", "lr must be a number"),
    ("optimizer.params.lr=NaN", "lr must be a number"),
    ("optimizer.params.eps=Infinity", "eps must be a number"),
    ("custom.x=NaN", "not a JSON value"),
    ("optimizer.params.betas=0.9", "betas must be a list of numbers"),
    ("gradient_clipping=[1]", "gradient_clipping must be a number"),
    ("some.custom_field=word", "quote a string"),
    ("optimizer..lr=1", "key=value"),
])
def test_override_values_parse_as_json(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_override(text)


def test_bare_strings_only_for_string_fields():
    assert parse_override("scheduler.type=WarmupLR") == ("scheduler.type", "WarmupLR")
    assert parse_override('some.custom_field="word"') == ("some.custom_field", "word")
    assert parse_override("optimizer.params.lr=3e-4") == ("optimizer.params.lr", 3e-4)


@pytest.mark.parametrize(("model", "cluster", "gpus", "gbs"), [
    ("gpt2-medium", "a100-40g", 8, 64), ("llama2-7b", "a100-80g", 16, 128), ("gpt3-13b", "h100-80g", 32, 256),
])
def test_recommendations_are_runnable_by_deepspeed(ds_dist, model, cluster, gpus, gbs):
    """The DeepSpeed target never recommends what DeepSpeed refuses: ZeRO >= 2 with pipelining, a broken batch
    rule, or more memory than the GPU has."""
    from pptune.planner import PlanSettings, plan

    r = plan(model, cluster=cluster, gpus=gpus, global_batch_size=gbs, settings=PlanSettings(trials=40, seed=0))
    c = r.best
    parsed = _validate(ds_config(c), c.dp)
    assert parsed.train_batch_size == gbs == c.micro_batch_size * c.num_microbatches * c.dp
    assert c.pp == 1 or parsed.zero_optimization_stage < 2
    assert c.schedule == "1f1b" and r.estimate.feasible
    assert max(r.estimate.memory_per_stage_bytes) <= r.cluster.gpu.memory_bytes
