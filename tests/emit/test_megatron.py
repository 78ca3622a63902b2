"""megatron_args: emitted flags pass check_megatron_args for every Megatron config; the checker catches each rule."""

from __future__ import annotations

import pytest

from pptune.emit.megatron import (
    check_megatron_args,
    format_args,
    layout_string,
    megatron_args,
    parse_args_text,
    split_flags,
    stage_block_counts,
)
from pptune.emit.megatron_check import parse_layout
from pptune.errors import ConfigError
from pptune.model.spec import PRESETS
from pptune.parallel import ParallelConfig
from pptune.planner import build_space

ROLES_12 = ["embedding"] + ["block"] * 12 + ["head"]


def _even(pp: int, vpp: int = 1, blocks: int = 12) -> list[int]:
    """Boundaries with blocks split evenly, embedding in chunk 0 and head in the last chunk."""
    per = blocks // (pp * vpp)
    return [0] + [1 + per * (c + 1) for c in range(pp * vpp - 1)] + [blocks + 2]


def test_split_flags():
    assert stage_block_counts(ROLES_12, [0, 7, 14]) == (6, 6)
    assert split_flags(ROLES_12, [0, 7, 14], pp=2) == []
    assert split_flags(ROLES_12, [0, 5, 14], pp=2) == ["--decoder-first-pipeline-num-layers", "4"]
    # first 2, middle 4 and 4, last 2
    assert split_flags(ROLES_12, [0, 3, 7, 11, 14], pp=4) == [
        "--decoder-first-pipeline-num-layers", "2", "--decoder-last-pipeline-num-layers", "2"]
    # unequal middle stages: only a layout expresses it
    assert split_flags(ROLES_12, [0, 4, 8, 11, 14], pp=4) == [
        "--pipeline-model-parallel-layout", "Et*3|t*4|t*3|t*2L"]
    assert split_flags(ROLES_12, _even(3, 2), pp=3, vpp=2) == ["--num-layers-per-virtual-pipeline-stage", "2"]
    assert layout_string(ROLES_12, [0, 1, 13, 14]) == "E|t*12|L"
    assert parse_layout("Et*3|t*4|t*3|t*2L") == ["Ettt", "tttt", "ttt", "ttL"]


def test_uneven_interleaved_chunks_as_a_compact_layout():
    """126 blocks in pp 8 x vpp 8 chunks of two layers (E and L count as layers, as the balanced split puts them):
    runs of equal chunks are written (stage|)*k, which unrolls to the same 64 chunks Megatron reads."""
    roles = ["embedding"] + ["block"] * 126 + ["head"]
    bounds = list(range(0, 129, 2))
    flags = split_flags(roles, bounds, pp=8, vpp=8)
    assert flags == ["--pipeline-model-parallel-layout", "Et|(t*2|)*62tL"]
    stages = parse_layout(flags[1])
    assert len(stages) == 64 and stages[0] == "Et" and stages[-1] == "tL" and set(stages[1:-1]) == {"tt"}
    spec = PRESETS["gpt2-small"].replace(num_layers=126)
    c = ParallelConfig(tp=1, pp=8, dp=2, num_microbatches=8, schedule="interleaved_1f1b", vpp=8, partition="balanced",
                       target="megatron")
    check_megatron_args(megatron_args(c, spec, roles=roles, boundaries=bounds), world_size=16)
    # a run that reaches the last chunk stays spelled out; two equal chunks are not grouped
    assert layout_string(ROLES_12, [0, 1, 5, 9, 13, 14]) == "E|(t*4|)*3L"
    assert layout_string(ROLES_12, [0, 4, 8, 11, 14]) == "Et*3|t*4|t*3|t*2L"


def test_every_megatron_config_passes_the_checker():
    spec = PRESETS["gpt2-small"]
    space = build_space(num_blocks=12, gpus=16, gpus_per_node=8, global_batch_size=64, num_heads=12,
                        target="megatron")
    checked = 0
    for c in space.configs():
        if c.partition == "balanced":
            continue
        bounds = _even(c.pp, c.vpp)
        assert split_flags(ROLES_12, bounds, pp=c.pp, vpp=c.vpp) in ([], ["--num-layers-per-virtual-pipeline-stage", str(12 // (c.pp * c.vpp))])
        args = megatron_args(c, spec, roles=ROLES_12, boundaries=bounds)
        check_megatron_args(args, world_size=16)
        assert parse_args_text(format_args(args, ["header"])) == args
        checked += 1
    assert checked > 100


def test_llama_flags():
    spec = PRESETS["llama2-70b"]
    c = ParallelConfig(tp=8, pp=4, dp=2, micro_batch_size=1, num_microbatches=16, zero_stage=1, recompute="selective",
                       sequence_parallel=True, target="megatron", partition="uniform")
    roles = ["embedding"] + ["block"] * 80 + ["head"]
    args = megatron_args(c, spec, roles=roles, boundaries=[0, 21, 41, 61, 82])
    check_megatron_args(args, world_size=64)
    text = " ".join(args)
    for flag in ("--group-query-attention --num-query-groups 8", "--swiglu", "--normalization RMSNorm",
                 "--untie-embeddings-and-output-weights", "--use-distributed-optimizer", "--overlap-param-gather",
                 "--sequence-parallel", "--recompute-granularity selective", "--bf16", "--global-batch-size 32",
                 "--ffn-hidden-size 28672", "--position-embedding-type rope"):
        assert flag in text


def test_full_recompute_and_zero3():
    spec = PRESETS["gpt2-small"]
    c = ParallelConfig(pp=2, dp=4, num_microbatches=8, recompute="full")
    args = megatron_args(c, spec, roles=ROLES_12, boundaries=[0, 7, 14])
    assert "--recompute-method uniform --recompute-num-layers 1" in " ".join(args)
    with pytest.raises(ConfigError, match="ZeRO stage 3 with pp 1: Megatron-LM allows only ZeRO 0 or 1"):
        megatron_args(ParallelConfig(dp=8, zero_stage=3), spec, roles=ROLES_12, boundaries=[0, 14])


GOOD = ["--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "4", "--micro-batch-size", "1",
        "--global-batch-size", "16", "--num-layers", "24", "--hidden-size", "1024", "--num-attention-heads", "16",
        "--seq-length", "1024", "--max-position-embeddings", "1024"]


def _with(*extra: str, drop: tuple[str, ...] = (), **values: str) -> list[str]:
    args = list(GOOD)
    for flag in drop:
        i = args.index(flag)
        del args[i:i + 2]
    for flag, value in values.items():
        args[args.index("--" + flag.replace("_", "-")) + 1] = value
    return args + list(extra)


@pytest.mark.parametrize(("args", "world", "message"), [
    (_with(), 12, "world size 12 is not divisible by tp 2 \\* pp 4"),
    (_with(global_batch_size="7"), 16, "global batch 7 is not divisible by micro batch 1 \\* dp 2"),
    (_with(num_layers="26"), 16, "26 layers are not divisible by pp 4"),
    (_with(hidden_size="1000"), 16, "hidden size 1000 is not divisible by 16 attention heads"),
    (_with(tensor_model_parallel_size="3"), 24, "16 attention heads are not divisible by tp 3"),
    (_with("--num-query-groups", "4"), 16, "no effect without --group-query-attention"),
    (_with("--group-query-attention", "--num-query-groups", "1"), 16, "query groups must divide"),
    (_with(max_position_embeddings="512"), 16, "max position embeddings 512 < seq length 1024"),
    (_with("--num-layers-per-virtual-pipeline-stage", "4"), 16, "6 layers per stage are not divisible by 4"),
    (_with("--num-layers-per-virtual-pipeline-stage", "3", global_batch_size="12"), 16,
     "6 micro-batches are not a multiple of pp 4"),
    (_with("--num-layers-per-virtual-pipeline-stage", "3", pipeline_model_parallel_size="2"), 8,
     "interleaved schedule needs pp > 2"),
    (_with("--decoder-first-pipeline-num-layers", "5"), 16, "leave 19 for 3 middle stages"),
    (_with("--decoder-first-pipeline-num-layers", "3", "--num-layers-per-virtual-pipeline-stage", "3"), 16,
     "need --num-virtual-stages-per-pipeline-rank"),
    (_with("--pipeline-model-parallel-layout", "Et*6|t*6|t*6|t*5L"), 16, "holds 23 decoder layers"),
    (_with("--pipeline-model-parallel-layout", "Et*6|t*6|t*6L"), 16, "not a multiple of pp 4"),
    (_with("--pipeline-model-parallel-layout", "t*6|Et*6|t*6|t*6L"), 16, "the embedding E must come first"),
    (_with("--pipeline-model-parallel-layout", "Et*6|t*6|t*6|t*6L", "--decoder-first-pipeline-num-layers", "6"), 16,
     "already fixes every stage"),
    (_with("--recompute-granularity", "full"), 16, "full recompute needs --recompute-method"),
    (_with("--recompute-granularity", "full", "--recompute-method", "uniform"), 16, "--recompute-num-layers is required"),
    (_with("--recompute-granularity", "selective", "--recompute-method", "uniform"), 16, "selective recompute takes no"),
    (_with("--recompute-method", "block"), 16, "need --recompute-granularity full"),
    (_with("--overlap-param-gather", "--overlap-grad-reduce"), 16, "needs --use-distributed-optimizer"),
    (_with("--sequence-parallel", tensor_model_parallel_size="1"), 8, "--sequence-parallel needs tp > 1"),
    (_with("--bf16", "--fp16"), 16, "exclusive"),
    (_with(drop=("--micro-batch-size",)), 16, "--micro-batch-size is required"),
    (_with("--bf16", "--bf16"), 16, "given twice"),
])
def test_checker_catches_each_rule(args, world, message):
    with pytest.raises(ConfigError, match=message):
        check_megatron_args(args, world_size=world)


def test_good_args_pass():
    check_megatron_args(GOOD, world_size=16)
    check_megatron_args(_with("--decoder-first-pipeline-num-layers", "3", "--decoder-last-pipeline-num-layers", "3"), world_size=16)
    check_megatron_args(_with("--pipeline-model-parallel-layout", "Et*5|t*7|t*6|t*6L"), world_size=16)
    check_megatron_args(_with("--num-layers-per-virtual-pipeline-stage", "3"), world_size=16)


def test_context_parallel_size_is_emitted_and_checked():
    spec = PRESETS["gpt2-small"].replace(seq_len=32768)
    c = ParallelConfig(tp=2, cp=4, pp=2, dp=2, num_microbatches=4, partition="balanced", target="megatron")
    args = megatron_args(c, spec, roles=ROLES_12, boundaries=[0, 7, 14])
    assert args[args.index("--context-parallel-size") + 1] == "4"
    check_megatron_args(args, world_size=32)
    with pytest.raises(ConfigError, match="world size 24 is not divisible by tp 2 \\* pp 2 \\* cp 4"):
        check_megatron_args(args, world_size=24)
    odd = list(args)
    odd[odd.index("--seq-length") + 1] = odd[odd.index("--max-position-embeddings") + 1] = "32764"
    with pytest.raises(ConfigError, match="not a multiple of 2 x context-parallel size 4"):
        check_megatron_args(odd, world_size=32)
    assert "--context-parallel-size" not in megatron_args(c.replace(cp=1, dp=8), spec, roles=ROLES_12,
                                                          boundaries=[0, 7, 14])


def _knob_args(**kw) -> list[str]:
    config = ParallelConfig(pp=2, dp=4, micro_batch_size=1, num_microbatches=4, target="megatron", zero_stage=1,
                            partition="type:TransformerBlockPipe", **kw)
    args = megatron_args(config, PRESETS["gpt2-small"], roles=ROLES_12, boundaries=[0, 7, 14])
    check_megatron_args(args, world_size=8)
    return args


def test_overlap_flags_follow_the_config():
    assert {"--overlap-grad-reduce", "--overlap-param-gather"} <= set(_knob_args())
    args = _knob_args(overlap_param_gather=False)
    assert "--overlap-grad-reduce" in args and "--overlap-param-gather" not in args
    args = _knob_args(overlap_grad_reduce=False)  # the param-gather default follows (it needs the reduce overlap)
    assert "--overlap-grad-reduce" not in args and "--overlap-param-gather" not in args


def test_unfused_attention_is_megatrons_unfused_backend():
    config = ParallelConfig(pp=2, micro_batch_size=1, num_microbatches=4, target="megatron",
                            partition="type:TransformerBlockPipe")
    spec = PRESETS["gpt2-small"].replace(attention="unfused")
    args = megatron_args(config, spec, roles=ROLES_12, boundaries=[0, 7, 14])
    assert " ".join(args).endswith("--attention-backend unfused --bf16")
    check_megatron_args(args, world_size=2)
    with pytest.raises(ConfigError, match="--attention-backend must be one of"):
        check_megatron_args([*args[:-3], "--attention-backend", "cudnn"], world_size=2)
