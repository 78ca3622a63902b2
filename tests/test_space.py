"""SearchSpace: layouts obey the tp/pp/dp rules, every enumerated config is valid for its target, fixes and errors."""

from __future__ import annotations

import pytest

from pptune.errors import ConfigError
from pptune.planner import Fixed, Layout, build_space


def small(**kw):
    args = dict(num_blocks=12, gpus=8, gpus_per_node=8, global_batch_size=32, num_heads=12)
    args.update(kw)
    return build_space(**args)


def test_layouts_follow_the_rules():
    space = small(gpus=16, gpus_per_node=4, num_heads=12, num_blocks=6, global_batch_size=8)
    keys = {lay.key for lay in space.layouts}
    for lay in space.layouts:
        assert lay.tp * lay.pp * lay.dp == 16
        assert lay.tp <= 4 and 12 % lay.tp == 0
        assert lay.pp <= 6
        assert 8 % lay.dp == 0
    # tp 8/16 exceed the node; pp 8/16 exceed the blocks; dp 16 does not divide the batch of 8
    assert "tp1-pp1-dp16" not in keys and "tp1-pp16-dp1" not in keys and "tp8-pp1-dp2" not in keys
    assert {"tp4-pp4-dp1", "tp2-pp1-dp8", "tp1-pp2-dp8", "tp4-pp2-dp2"} <= keys


def test_kv_heads_limit_tp():
    space = small(num_heads=32, num_kv_heads=2)
    assert {lay.tp for lay in space.layouts} == {1, 2}


def test_every_deepspeed_config_is_valid_and_unique():
    space = small(gpus=8, num_blocks=12)
    configs = list(space.configs())
    assert len(configs) == len(set(configs)) == space.size()
    for c in configs:
        assert c.target == "deepspeed" and c.world_size == 8
        assert c.global_batch_size == 32
        assert c.schedule == "1f1b" and c.vpp == 1
        if c.pp > 1:
            assert c.zero_stage <= 1
        assert c.recompute in ("none", "full") and not c.sequence_parallel
    assert {c.zero_stage for c in configs if c.pp == 1} == {0, 1, 2, 3}
    assert {c.partition for c in configs if c.pp > 1} == {"parameters", "uniform", "type:TransformerBlockPipe", "balanced"}
    assert {c.partition for c in configs if c.pp == 1} == {"parameters"}  # one stage: one split


def test_micro_batches_divide_the_replica_batch():
    space = small(gpus=8, global_batch_size=8, max_micro_batch_size=16)
    for c in space.configs():
        assert (8 // c.dp) % c.micro_batch_size == 0
        assert c.num_microbatches == 8 // (c.dp * c.micro_batch_size)
    assert space.micro_batch_sizes == (1, 2, 4, 8, 16)
    assert space.micro_batch_sizes_for(Layout(tp=1, pp=1, dp=8)) == (1,)


def test_megatron_space_rules():
    space = small(gpus=16, num_blocks=24, num_heads=16, global_batch_size=64, target="megatron")
    configs = list(space.configs())
    assert {c.schedule for c in configs} == {"1f1b", "interleaved_1f1b"}
    for c in configs:
        assert c.zero_stage <= 1
        if c.schedule == "interleaved_1f1b":
            assert c.pp > 2 and c.pp * c.vpp <= 24 and c.num_microbatches % c.pp == 0 and c.vpp > 1
            if c.partition.startswith("type:"):  # even chunks; balanced ones may be uneven
                assert 24 % (c.pp * c.vpp) == 0
        if c.sequence_parallel:
            assert c.tp > 1
        assert c.partition in ("type:TransformerBlockPipe", "balanced")
        if c.partition.startswith("type:"):  # Megatron's even split
            assert 24 % c.pp == 0
    assert any(c.sequence_parallel for c in configs) and any(c.recompute == "selective" for c in configs)
    uneven = {(c.pp, c.vpp) for c in configs if c.schedule == "interleaved_1f1b" and 24 % (c.pp * c.vpp)}
    assert (4, 4) in uneven and all(c.partition == "balanced" for c in configs
                                    if c.schedule == "interleaved_1f1b" and 24 % (c.pp * c.vpp))


def test_uneven_interleaving_of_126_blocks():
    """The Llama-3-405B depth: 126 blocks divide by no power-of-two pp x vpp, yet interleaving is offered with the
    balanced split (uneven chunks, Megatron's layout flag) and never with the even one."""
    space = small(gpus=64, num_blocks=126, num_heads=16, global_batch_size=64, target="megatron")
    inter = [c for c in space.configs() if c.schedule == "interleaved_1f1b"]
    assert {(c.pp, c.vpp) for c in inter} >= {(4, 2), (8, 8), (16, 4)}
    assert {c.partition for c in inter} == {"balanced"}
    assert all(c.pp * c.vpp <= 126 for c in inter)


def test_megatron_uniform_means_even_blocks():
    space = small(target="megatron", fixed=Fixed(partition="uniform"), block_kind="MyBlock")
    assert space.partitions == ("type:MyBlock",)
    with pytest.raises(ConfigError, match="uniform \\(even blocks\\) or balanced"):
        small(target="megatron", fixed=Fixed(partition="parameters"))


def test_fixes_pin_dimensions():
    space = small(fixed=Fixed(tp=2, pp=2, micro_batch_size=2, zero_stage=1, recompute="full", partition="balanced"))
    configs = list(space.configs())
    assert configs and all(
        (c.tp, c.pp, c.dp, c.micro_batch_size, c.zero_stage, c.recompute, c.partition) == (2, 2, 2, 2, 1, "full", "balanced")
        for c in configs
    )


@pytest.mark.parametrize(("kw", "message"), [
    (dict(gpus=8, fixed=Fixed(tp=3)), "--tp 3 does not divide 8 GPUs"),
    (dict(gpus=16, global_batch_size=1, num_blocks=1, gpus_per_node=1), "global batch 1 is smaller than the smallest data-parallel size 16"),
    (dict(gpus=13, num_heads=12, num_blocks=12, gpus_per_node=8), "13 GPUs factor into no tp*pp*dp layout"),
    (dict(fixed=Fixed(schedule="interleaved_1f1b")), "DeepSpeed's pipeline engine runs 1f1b only"),
    (dict(fixed=Fixed(recompute="selective")), "selective recompute is a Megatron feature"),
    (dict(fixed=Fixed(zero_stage=3), target="megatron"), "ZeRO 0 or 1"),
    (dict(fixed=Fixed(micro_batch_size=64)), "no configuration of 8 GPUs fits the fixed choices"),
    (dict(fixed=Fixed(zero_stage=2, pp=2)), "no configuration of 8 GPUs fits the fixed choices"),
])
def test_empty_spaces_say_why(kw, message):
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        small(**kw)


def test_13_gpus_message_names_the_rules():
    with pytest.raises(ConfigError) as info:
        small(gpus=13, num_heads=12, num_blocks=12, gpus_per_node=8)
    text = str(info.value)
    assert "tp must divide 12 heads" in text or "dp must divide the global batch 32" in text
    assert "\n" not in text


def test_digest_is_stable_and_tracks_the_space():
    assert small().digest() == small().digest()
    assert small().digest() != small(fixed=Fixed(tp=1)).digest()
    assert small().digest() != small(global_batch_size=64).digest()


def test_context_parallelism_is_offered_for_long_sequences_only():
    long = small(gpus=64, num_blocks=16, num_heads=16, global_batch_size=16, target="megatron", seq_len=131072)
    assert long.context_parallel == (1, 2, 4, 8, 16, 32)
    layouts = {lay.key: lay for lay in long.layouts}
    assert "tp8-cp4-pp2-dp1" in layouts and layouts["tp8-cp4-pp2-dp1"].cp == 4
    assert all(lay.tp * lay.cp * lay.pp * lay.dp == 64 for lay in long.layouts)
    c = next(long.configs_for(layouts["tp8-cp4-pp2-dp1"]))
    assert (c.cp, c.world_size, c.dp_cp) == (4, 64, 4) and " cp4 " in c.label()
    assert small(gpus=64, num_blocks=16, num_heads=16, global_batch_size=16, target="megatron",
                 seq_len=8192).context_parallel == (1,)
    assert small(gpus=64, num_blocks=16, num_heads=16, global_batch_size=16, target="deepspeed",
                 seq_len=131072).context_parallel == (1,)
    pinned = small(gpus=64, num_blocks=16, num_heads=16, global_batch_size=16, target="megatron", seq_len=8192,
                   fixed=Fixed(cp=2))
    assert {lay.cp for lay in pinned.layouts} == {2} and "context_parallel" in pinned.to_dict()


def test_a_pinned_cp_is_checked_against_the_target_and_the_sequence():
    with pytest.raises(ConfigError, match="Megatron feature"):
        small(gpus=64, global_batch_size=16, seq_len=8192, fixed=Fixed(cp=2))
    with pytest.raises(ConfigError, match="not a multiple of 2 x cp 3"):
        small(gpus=48, global_batch_size=16, target="megatron", seq_len=8192, fixed=Fixed(cp=3))
