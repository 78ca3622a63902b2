"""ParallelConfig: validation messages with the numbers, the batch rule, recompute intervals, labels."""

from __future__ import annotations

import pytest

from pptune.errors import ConfigError
from pptune.parallel import ParallelConfig


def test_defaults_and_derived_sizes():
    c = ParallelConfig(tp=2, pp=4, dp=3, micro_batch_size=2, num_microbatches=8)
    assert c.world_size == 24 and c.global_batch_size == 2 * 8 * 3
    assert c.replace(pp=2).pp == 2 and c.pp == 4  # frozen: replace returns a copy
    assert c.label() == "tp2 pp4 dp3 mbs2 m8 1f1b z0 none parameters"
    assert c.to_dict()["tp"] == 2


def test_keyword_only():
    with pytest.raises(TypeError):
        ParallelConfig(2, 4)  # type: ignore[misc]


@pytest.mark.parametrize(("kw", "message"), [
    ({"tp": 0}, "tp must be a positive integer, got 0"),
    ({"pp": True}, "pp must be a positive integer, got True"),
    ({"schedule": "pipedream"}, "schedule must be one of"),
    ({"dtype": "int8"}, "dtype must be one of"),
    ({"zero_stage": 4}, "zero stage must be 0, 1, 2 or 3, got 4"),
    ({"vpp": 2}, "vpp 2 > 1 needs schedule interleaved_1f1b"),
    ({"schedule": "interleaved_1f1b", "target": "megatron"}, "interleaved_1f1b needs pp >= 2, got pp 1"),
    ({"pp": 2, "zero_stage": 2}, "ZeRO stage 2 with pp 2"),
    ({"pp": 2, "schedule": "zb_h1"}, "DeepSpeed's pipeline engine runs 1f1b only, got schedule zb_h1"),
    ({"recompute": "selective"}, "selective recompute is a Megatron feature"),
    ({"sequence_parallel": True}, "sequence parallelism needs tp > 1"),
    ({"recompute": "every:0"}, "recompute must be none, selective, full or every:K"),
    ({"partition": "type:[unclosed"}, "bad regular expression"),
    ({"partition": "profile"}, "partition must be uniform, parameters, balanced or type:<regex>"),
    ({"target": "fairscale"}, "target must be deepspeed or megatron"),
])
def test_invalid_configs_raise_with_the_numbers(kw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        ParallelConfig(**kw)


def test_megatron_allows_what_deepspeed_does_not():
    c = ParallelConfig(pp=4, schedule="interleaved_1f1b", vpp=2, target="megatron", recompute="selective",
                       zero_stage=2, tp=2, sequence_parallel=True)
    assert c.vpp == 2


def test_recompute_interval():
    assert ParallelConfig().recompute_interval == 0
    assert ParallelConfig(recompute="full").recompute_interval == 1
    assert ParallelConfig(recompute="every:3").recompute_interval == 3
    assert ParallelConfig(recompute="selective", target="megatron").recompute_interval == 0


def test_from_global_batch_applies_deepspeeds_batch_rule():
    c = ParallelConfig.from_global_batch(global_batch_size=64, micro_batch_size=2, dp=4, pp=2)
    assert c.num_microbatches == 8 and c.pp == 2
    with pytest.raises(ConfigError, match="global batch 60 is not divisible by micro batch 4 \\* dp 4 = 16"):
        ParallelConfig.from_global_batch(global_batch_size=60, micro_batch_size=4, dp=4)


@pytest.mark.parametrize(("kw", "message"), [
    (dict(overlap_grad_reduce=True), "DeepSpeed's engine reduces gradients after the backward: overlap_grad_reduce needs --target megatron"),
    (dict(pp=2, overlap_param_gather=True), "DeepSpeed's pipeline engine reduces gradients after the backward: overlap_param_gather needs --target megatron"),
    (dict(target="megatron", overlap_param_gather=True), "--overlap-param-gather needs the distributed optimizer (ZeRO 1)"),
    (dict(target="megatron", zero_stage=1, overlap_grad_reduce=False, overlap_param_gather=True),
     "--overlap-param-gather needs --overlap-grad-reduce"),
    (dict(target="megatron", overlap_grad_reduce=1), "overlap_grad_reduce must be true or false, got 1"),
])
def test_overlap_knobs_follow_the_target_rules(kw, message):
    with pytest.raises(ConfigError) as exc:
        ParallelConfig(**kw)
    assert str(exc.value) == message
