"""pptune.targets and pptune.target_checks: the table of target rules, one message per rule, and every checker using the same one."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from pptune import target_checks, targets
from pptune.cost.checks import check_config
from pptune.cost.schedule import simulate
from pptune.emit.deepspeed import ds_config, engine_kind
from pptune.emit.megatron import megatron_args
from pptune.errors import ConfigError
from pptune.hardware import load_cluster
from pptune.model.spec import PRESETS
from pptune.parallel import ParallelConfig, Target
from pptune.planner import Fixed, build_space
from pptune.profile.analytic import analytic_profile
from pptune.target_checks import Violation, check, violations
from pptune.targets import DEEPSPEED_PIPE, DEEPSPEED_PLAIN, MEGATRON, TARGETS, rules_for

SPEC = dataclasses.replace(PRESETS["gpt2-small"], num_kv_heads=4)  # 12 blocks, 12 heads, 4 KV heads
CLUSTER = load_cluster("a100-80g", num_gpus=16)  # 2 nodes x 8
CLUSTER_24 = load_cluster("a100-80g", num_gpus=24)  # 3 nodes x 8: tp 12 would straddle them
PROFILE = analytic_profile(SPEC, CLUSTER.gpu, tp=1, micro_batch_sizes=(1,))  # 14 pipeline layers


def raw(**kw) -> ParallelConfig:
    """A ParallelConfig that skips its own validation, to hand the checks a config that breaks a rule."""
    c = object.__new__(ParallelConfig)
    for name, f in ParallelConfig.__dataclass_fields__.items():
        object.__setattr__(c, name, kw.get(name, f.default))
    return c


def message_of(call) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    return str(info.value)


# --- the table -------------------------------------------------------------------------------------------
def test_targets_name_the_parallel_config_literal():
    assert TARGETS == typing.get_args(Target) == ("deepspeed", "megatron")


@pytest.mark.parametrize(("target", "pp", "expected"), [
    ("deepspeed", 2, DEEPSPEED_PIPE), ("deepspeed", 8, DEEPSPEED_PIPE), ("deepspeed", 1, DEEPSPEED_PLAIN),
    ("megatron", 1, MEGATRON), ("megatron", 4, MEGATRON),
])
def test_rules_for_picks_the_engine(target, pp, expected):
    assert rules_for(target, pp) is expected


def test_rules_for_an_unknown_target():
    with pytest.raises(ConfigError, match="^target must be deepspeed or megatron, got 'fairscale'$"):
        rules_for("fairscale", 2)


def test_deepspeed_pipeline_engine_fields():
    r = DEEPSPEED_PIPE
    assert r.name == "deepspeed-pipe" and r.engine == "DeepSpeed's pipeline engine"
    assert r.pipeline_schedules == r.planned_schedules == ("1f1b",) and r.what_if_schedules == ()
    assert (r.max_zero_stage_with_pp, r.planned_max_zero_stage) == (1, 1)
    assert r.recompute_modes == ("none", "full", "every") and not r.sequence_parallel
    assert r.blocking_sends and r.partitioned_sends and r.keeps_stage_output and not r.overlap_grad_reduce
    assert dict(r.grad_bytes_per_param) == {"fp32": 4.0, "bf16": 6.0, "fp16": 2.0} and r.grad_bytes("bf16") == 6.0
    assert r.bf16_optimizer_max_zero == 1
    assert r.partition_methods == ("parameters", "uniform", "type:", "balanced")
    assert not r.even_split_needs_divisible_blocks


def test_deepspeed_without_pipeline_differs_only_in_zero():
    plain, pipe = DEEPSPEED_PLAIN, DEEPSPEED_PIPE
    assert plain.name == "deepspeed" and (plain.max_zero_stage_with_pp, plain.planned_max_zero_stage) == (3, 3)
    same = {"name", "description", "engine", "max_zero_stage_with_pp", "planned_max_zero_stage"}
    for f in dataclasses.fields(targets.TargetRules):
        if f.name not in same:
            assert getattr(plain, f.name) == getattr(pipe, f.name), f.name


def test_megatron_fields():
    r = MEGATRON
    assert r.name == "megatron" and r.engine == "Megatron-LM"
    assert r.pipeline_schedules == ("gpipe", "1f1b", "interleaved_1f1b", "zb_h1")  # gpipe, zb_h1: what-ifs
    assert r.planned_schedules == ("1f1b", "interleaved_1f1b") and r.what_if_schedules == ("zb_h1",)
    assert r.max_zero_stage_with_pp == 3 and r.planned_max_zero_stage == 1  # estimated up to 3, planned up to 1
    assert r.recompute_modes == ("none", "selective", "full", "every") and r.sequence_parallel
    assert not (r.blocking_sends or r.partitioned_sends or r.keeps_stage_output) and r.overlap_grad_reduce
    assert dict(r.grad_bytes_per_param) == {"fp32": 4.0, "bf16": 4.0, "fp16": 4.0}
    assert r.bf16_optimizer_max_zero == -1 and r.interleaved_min_pp == 3
    assert r.partition_methods == ("type:", "balanced") and r.even_split_needs_divisible_blocks


def test_rules_are_frozen_and_hashable():
    assert len({DEEPSPEED_PIPE, DEEPSPEED_PLAIN, MEGATRON}) == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        MEGATRON.sequence_parallel = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        MEGATRON.grad_bytes_per_param["bf16"] = 2.0  # type: ignore[index]


# --- one message per rule ----------------------------------------------------------------------------------
M = {"target": "megatron"}
RULE_CASES = [
    ("vpp-needs-interleaving", dict(vpp=2), {}, "vpp 2 > 1 needs schedule interleaved_1f1b, got 1f1b"),
    ("interleaving-pp", dict(schedule="interleaved_1f1b", **M), {}, "interleaved_1f1b needs pp >= 2, got pp 1"),
    ("interleaving-pp", dict(schedule="interleaved_1f1b", pp=2, vpp=2, num_microbatches=4, **M), {"planned": True},
     "interleaved_1f1b needs pp >= 3, got pp 2"),
    ("target", dict(target="fairscale"), {}, "target must be deepspeed or megatron, got 'fairscale'"),
    ("zero-stage", dict(pp=2, zero_stage=2), {},
     "ZeRO stage 2 with pp 2: DeepSpeed's pipeline engine allows only ZeRO 0 or 1"),
    ("zero-stage", dict(pp=2, zero_stage=3, **M), {"planned": True},
     "ZeRO stage 3 with pp 2: Megatron-LM allows only ZeRO 0 or 1"),
    ("pipeline-schedule", dict(pp=2, schedule="zb_h1"), {},
     "DeepSpeed's pipeline engine runs 1f1b only, got schedule zb_h1"),
    ("planned-schedule", dict(pp=2, schedule="gpipe", **M), {"planned": True},
     "Megatron-LM does not train with gpipe; choose 1f1b, interleaved_1f1b or zb_h1"),
    ("recompute-mode", dict(recompute="selective", pp=2), {},
     "selective recompute is a Megatron feature; DeepSpeed's pipeline engine checkpoints whole layers "
     "(recompute none, full or every:K)"),
    ("sequence-parallel-tp", dict(sequence_parallel=True, **M), {}, "sequence parallelism needs tp > 1"),
    ("sequence-parallel-target", dict(sequence_parallel=True, tp=2), {"planned": True},
     "sequence parallelism is a Megatron feature; use --target megatron"),
    ("chunks-layers", dict(pp=16), {"model": PROFILE}, "pp 16 > 14 pipeline layers of gpt2-small: every chunk needs a layer"),
    ("chunks-layers", dict(pp=4, vpp=4, schedule="interleaved_1f1b", num_microbatches=4, **M), {"model": SPEC},
     "pp 4 x vpp 4 = 16 chunks > 14 pipeline layers of gpt2-small: every chunk needs a layer"),
    ("context-parallel-target", dict(cp=2), {},
     "context parallelism (cp 2) is a Megatron feature; use --target megatron"),
    ("context-parallel-seq", dict(cp=3, **M), {"model": SPEC},
     "sequence length 1024 of gpt2-small is not a multiple of 2 x cp 3 (Megatron's context split)"),
    ("world-size", dict(cp=2, dp=4, **M), {"cluster": CLUSTER},
     "tp 1 x cp 2 x pp 1 x dp 4 = 8 GPUs but cluster a100-80g has 16 (2 x 8)"),
    ("heads-tp", dict(tp=5), {"model": PRESETS["gpt2-small"]}, "12 attention heads of gpt2-small are not divisible by tp 5"),
    ("kv-heads-tp", dict(tp=3), {"model": PROFILE}, "4 key/value heads of gpt2-small are not divisible by tp 3"),
    ("stage-blocks", dict(pp=13, num_microbatches=13), {"model": SPEC, "planned": True},
     "pp 13 > 12 transformer blocks of gpt2-small: every stage needs a block"),
    ("even-split-blocks", dict(pp=5, partition="type:TransformerBlockPipe", **M), {"model": SPEC, "planned": True},
     "Megatron-LM's even split needs the 12 transformer blocks divisible by pp 5 (use balanced)"),
    ("interleaving-blocks", dict(pp=4, vpp=2, schedule="interleaved_1f1b", num_microbatches=8,
                                 partition="type:TransformerBlockPipe", **M),
     {"model": SPEC, "planned": True},
     "interleaved_1f1b needs the 12 transformer blocks divisible by pp 4 x vpp 2 (use balanced)"),
    ("interleaving-blocks", dict(pp=4, vpp=3, schedule="interleaved_1f1b", num_microbatches=8, partition="balanced", **M),
     {"model": dataclasses.replace(SPEC, num_layers=11), "planned": True},
     "interleaved_1f1b with pp 4 x vpp 3 = 12 chunks > 11 transformer blocks: every chunk needs a block"),
    ("overlap-knobs", dict(pp=2, overlap_grad_reduce=True, overlap_param_gather=False), {},
     "DeepSpeed's pipeline engine reduces gradients after the backward: overlap_grad_reduce needs --target megatron"),
    ("overlap-knobs", dict(overlap_grad_reduce=True, overlap_param_gather=True, **M), {},
     "--overlap-param-gather needs the distributed optimizer (ZeRO 1)"),
    ("overlap-knobs", dict(zero_stage=1, overlap_grad_reduce=False, overlap_param_gather=True, **M), {},
     "--overlap-param-gather needs --overlap-grad-reduce"),
    ("tp-node", dict(tp=12, dp=2), {"cluster": CLUSTER_24},
     "tp 12 > 8 GPUs per node of a100-80g: a tensor-parallel group across nodes must fill whole nodes "
     "(tp a multiple of 8)"),
    ("world-size", dict(dp=4), {"cluster": CLUSTER}, "tp 1 x pp 1 x dp 4 = 4 GPUs but cluster a100-80g has 16 (2 x 8)"),
    ("interleaving-microbatches", dict(pp=4, vpp=2, schedule="interleaved_1f1b", num_microbatches=6, **M), {},
     "interleaved_1f1b needs micro-batches per step 6 to be a multiple of pp 4 (Megatron's default group size)"),
]


@pytest.mark.parametrize(("rule", "kw", "context", "message"), RULE_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(RULE_CASES)])
def test_each_rule_has_one_message(rule, kw, context, message):
    found = violations(raw(**kw), context.get("model"), context.get("cluster"), planned=context.get("planned", False))
    assert found == (Violation(rule, message),)
    assert "\n" not in message
    with pytest.raises(ConfigError) as info:
        check(raw(**kw), context.get("model"), context.get("cluster"), planned=context.get("planned", False))
    assert str(info.value) == message


def test_every_rule_is_tested():
    assert {c[0] for c in RULE_CASES} == set(target_checks.RULES)


def test_violations_come_in_rule_order_and_check_raises_the_first():
    c = raw(pp=2, zero_stage=2, schedule="zb_h1", recompute="selective", dp=3)
    found = violations(c, PROFILE, CLUSTER)
    assert [v.rule for v in found] == ["zero-stage", "pipeline-schedule", "recompute-mode", "world-size"]
    assert [target_checks.RULES.index(v.rule) for v in found] == sorted(target_checks.RULES.index(v.rule) for v in found)
    assert message_of(lambda: check(c, PROFILE, CLUSTER)) == found[0].message


def test_step_rule_is_left_to_the_cost_checks():
    c = raw(pp=4, vpp=2, schedule="interleaved_1f1b", num_microbatches=6, target="megatron")
    assert violations(c, step=False) == ()
    assert ParallelConfig(pp=4, vpp=2, schedule="interleaved_1f1b", num_microbatches=6, target="megatron").pp == 4


@pytest.mark.parametrize("kw", [
    dict(),
    dict(tp=2, pp=4, dp=2, num_microbatches=8, zero_stage=1, recompute="every:2"),
    dict(tp=2, pp=4, dp=2, num_microbatches=8, schedule="interleaved_1f1b", vpp=3, target="megatron",
         recompute="selective", sequence_parallel=True, partition="type:TransformerBlockPipe"),
    dict(tp=4, dp=4, zero_stage=3, recompute="full"),
])
def test_a_valid_config_has_no_violations(kw):
    base = dict(dp=16) if not kw else {}
    c = ParallelConfig(**{**base, **kw})
    assert violations(c, PROFILE, CLUSTER, planned=True) == ()
    check_config(PROFILE, CLUSTER, c)


def test_what_ifs_are_estimated_but_not_planned():
    """Megatron with ZeRO 2/3 or GPipe: ParallelConfig and the cost checks accept them, planning does not."""
    for kw in (dict(pp=2, zero_stage=2), dict(pp=2, schedule="gpipe"), dict(tp=2, sequence_parallel=True)):
        target = "deepspeed" if "sequence_parallel" in kw else "megatron"
        c = ParallelConfig(target=target, **kw)
        assert violations(c) == () and violations(c, planned=True)


# --- every checker words a rule the same way ------------------------------------------------------------------
def small_space(**kw):
    args = dict(num_blocks=12, gpus=8, gpus_per_node=8, global_batch_size=64, num_heads=12)
    return build_space(**{**args, **kw})


SAME_WORDING = [
    ("vpp-needs-interleaving", dict(vpp=2), [
        lambda: ParallelConfig(vpp=2),
        lambda: simulate([1.0] * 4, [2.0] * 4, schedule="1f1b", num_microbatches=4, vpp=2),
        lambda: small_space(fixed=Fixed(schedule="1f1b", vpp=2)),
    ]),
    ("target", dict(target="fairscale"), [
        lambda: ParallelConfig(target="fairscale"),  # type: ignore[arg-type]
        lambda: small_space(target="fairscale"),
    ]),
    ("zero-stage", dict(pp=2, zero_stage=2), [
        lambda: ParallelConfig(pp=2, zero_stage=2),
        lambda: ds_config(raw(pp=2, zero_stage=2)),
    ]),
    ("pipeline-schedule", dict(pp=2, schedule="zb_h1"), [
        lambda: ParallelConfig(pp=2, schedule="zb_h1"),
        lambda: ds_config(raw(pp=2, schedule="zb_h1")),
    ]),
    ("recompute-mode", dict(recompute="selective"), [
        lambda: ParallelConfig(recompute="selective"),
        lambda: small_space(fixed=Fixed(recompute="selective")),
    ]),
    ("sequence-parallel-tp", dict(sequence_parallel=True, target="megatron"), [
        lambda: ParallelConfig(sequence_parallel=True, target="megatron"),
    ]),
    ("interleaving-microbatches", dict(pp=4, vpp=2, schedule="interleaved_1f1b", num_microbatches=6, target="megatron"), [
        lambda: check_config(PROFILE, load_cluster("a100-80g", num_gpus=4),
                             ParallelConfig(pp=4, vpp=2, schedule="interleaved_1f1b", num_microbatches=6,
                                            target="megatron")),
        lambda: simulate([1.0] * 8, [2.0] * 8, schedule="interleaved_1f1b", num_microbatches=6, vpp=2),
    ]),
]


@pytest.mark.parametrize(("rule", "kw", "calls"), SAME_WORDING, ids=[c[0] for c in SAME_WORDING])
def test_every_checker_uses_the_rules_wording(rule, kw, calls):
    (expected,) = violations(raw(**kw))
    assert expected.rule == rule
    for call in calls:
        assert message_of(call) == expected.message


@pytest.mark.parametrize(("rule", "kw", "context", "call"), [
    ("heads-tp", dict(tp=8, dp=1), {"model": PRESETS["gpt2-small"]},
     lambda: check_config(analytic_profile(PRESETS["gpt2-small"], CLUSTER.gpu, tp=1, micro_batch_sizes=(1,)),
                          load_cluster("a100-80g", num_gpus=8), ParallelConfig(tp=8))),
    ("tp-node", dict(tp=12, dp=2), {"cluster": CLUSTER_24},
     lambda: check_config(dataclasses.replace(PROFILE, spec=None), CLUSTER_24, ParallelConfig(tp=12, dp=2))),
    ("zero-stage", dict(zero_stage=3, target="megatron"), {"planned": True},
     lambda: megatron_args(ParallelConfig(zero_stage=3), SPEC, roles=["embedding"] + ["block"] * 12 + ["head"],
                           boundaries=[0, 14])),
])
def test_the_cost_checks_and_emitters_use_the_rules_wording(rule, kw, context, call):
    (expected,) = violations(raw(**kw), context.get("model"), context.get("cluster"), planned=context.get("planned", False))
    assert expected.rule == rule and message_of(call) == expected.message


def test_the_space_words_a_pinned_megatron_zero_like_the_emitter():
    space_message = message_of(lambda: small_space(target="megatron", fixed=Fixed(zero_stage=3)))
    assert space_message == target_checks.zero_rule(MEGATRON, 3, None, planned=True) == (
        "ZeRO stage 3: Megatron-LM allows only ZeRO 0 or 1")


@pytest.mark.parametrize(("rule", "kw", "context", "fixed"), [
    ("heads-tp", dict(tp=8), {"model": SPEC}, Fixed(tp=8)),
    ("stage-blocks", dict(pp=16, num_microbatches=16), {"model": SPEC, "planned": True}, Fixed(pp=16)),
])
def test_the_space_words_its_layout_rules_like_the_table(rule, kw, context, fixed):
    found = violations(raw(**kw), context.get("model"), context.get("cluster"), planned=context.get("planned", False))
    (expected,) = [v for v in found if v.rule == rule]
    message = message_of(lambda: build_space(num_blocks=12, gpus=16, gpus_per_node=8, global_batch_size=64,
                                             num_heads=12, num_kv_heads=4, fixed=fixed, model_name="gpt2-small",
                                             cluster_name="a100-80g"))
    assert message.endswith(": " + expected.message)


def test_the_space_words_a_tp_across_nodes_like_the_table():
    # A pinned tp across nodes is planned when it fills whole nodes (tp 16 on 8-GPU nodes), refused otherwise.
    (expected,) = [v for v in violations(raw(tp=12, dp=2), None, CLUSTER_24) if v.rule == "tp-node"]
    message = message_of(lambda: build_space(num_blocks=12, gpus=24, gpus_per_node=8, global_batch_size=64,
                                             num_heads=12, fixed=Fixed(tp=12), cluster_name="a100-80g"))
    assert message.endswith(": " + expected.message)
    space = build_space(num_blocks=12, gpus=16, gpus_per_node=8, global_batch_size=64, num_heads=16, fixed=Fixed(tp=16))
    assert {layout.tp for layout in space.layouts} == {16}


def test_the_space_plans_only_what_the_table_allows():
    for target in TARGETS:
        space = build_space(num_blocks=12, gpus=16, gpus_per_node=8, global_batch_size=64, num_heads=12,
                            target=target, zero_bubble=True)
        configs = list(space.configs())
        assert configs and all(violations(c, SPEC, CLUSTER, planned=True) == () for c in configs)
        assert {c.zero_stage for c in configs} == set(range(rules_for(target, 1).planned_max_zero_stage + 1))


def test_engine_kind_reads_the_pipeline_engines_zero_limit():
    assert engine_kind(ParallelConfig(dp=8, zero_stage=2)) == "plain"
    assert engine_kind(ParallelConfig(dp=8, zero_stage=1)) == "pipeline"
    assert engine_kind(ParallelConfig(pp=2, zero_stage=1)) == "pipeline"
