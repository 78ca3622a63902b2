"""Megatron-DeepSpeed's ``pretrain_gpt.py`` flags for a DeepSpeed plan, and a checker of that codebase's rules.

A DeepSpeed plan with tp > 1 needs tensor-parallel layers that pptune's runtime builds for its own measurements;
the usual place to train such a model is Megatron-DeepSpeed (microsoft/Megatron-DeepSpeed), whose ``GPTModelPipe``
is a DeepSpeed ``PipelineModule`` over a ``PipeModelDataParallelTopology``. Facts used, all from
microsoft/Megatron-DeepSpeed at commit f4157bea69f3df8c6cb66f2ebcda66ba03d1288e:

- ``pretrain_gpt.py`` builds ``GPTModelPipe`` when ``--deepspeed`` is given without ``--no-pipeline-parallel``,
  else the plain ``GPTModel`` (DeepSpeed's plain engine: the one that runs ZeRO 2/3); ``--zero-stage`` feeds
  ``deepspeed.zero.Init`` (stage 3) and the optimizer set-up, ``ds_config.json`` the engine.
- ``megatron/model/gpt_model.py`` ``GPTModelPipe``: ``partition_method='type:transformer'`` (fixed: no flag
  chooses another split) and ``activation_checkpoint_interval`` = ``--checkpoint-num-layers`` under
  ``--checkpoint-activations`` (or ``--recompute-num-layers`` with ``--recompute-granularity full
  --recompute-method uniform``), else 0.
- ``megatron/model/transformer.py``: the non-pipeline model checkpoints every ``--checkpoint-num-layers`` layers
  with ``--deepspeed --deepspeed-activation-checkpointing`` (DeepSpeed's checkpointing, configured in
  ``megatron/initialize.py``).
- ``megatron/arguments.py`` (``validate_args``): world size divisible by tp x pp; ``--no-pipeline-parallel`` needs
  pp 1; fp16 and bf16 exclusive; hidden divisible by heads; max positions >= seq length;
  ``--distribute-checkpointed-activations`` needs ``--checkpoint-activations``; selective recompute takes no
  method; ``--sequence-parallel`` is switched off at tp 1; ``--num-key-value-heads`` (grouped-query attention),
  ``--normalization rmsnorm``, ``--swiglu``, ``--use-rotary-position-embeddings`` with ``--no-position-embedding``,
  ``--untie-embeddings-and-output-weights``, ``--disable-bias-linear``, ``--use-flash-attn-v2`` (without it the
  attention is Megatron's unfused softmax).
- ``megatron/microbatches.py``: the global batch divisible by micro batch x dp; ``megatron/model/transformer.py``
  ``ParallelAttention`` divides heads and key/value heads by tp.
- DeepSpeed's ``PipelineEngine`` asserts ZeRO < 2 (deepspeed/runtime/pipe/engine.py), and its batch rule
  ``train_batch_size = micro * gradient_accumulation_steps * dp`` must agree with ``--micro-batch-size`` /
  ``--global-batch-size``; ``ds_config.json``'s precision and ZeRO stage must be the flags'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pptune.emit.megatron import dtype_flags
from pptune.emit.megatron_check import Flags, as_flags, flag_number
from pptune.errors import ConfigError
from pptune.model.spec import TransformerSpec
from pptune.parallel import ParallelConfig

SOURCE_COMMIT = "f4157bea69f3df8c6cb66f2ebcda66ba03d1288e"  # microsoft/Megatron-DeepSpeed, the facts above
WHAT = "megatron-deepspeed args"
SPLIT = "type:transformer"  # GPTModelPipe's fixed partition method


def megatron_deepspeed_args(config: ParallelConfig, spec: TransformerSpec, *,
                            ds_config_path: str = "ds_config.json") -> list[str]:
    """``pretrain_gpt.py`` flags that run ``config`` (a DeepSpeed plan) with ``ds_config_path`` as its engine config.

    Raises:
        ConfigError: a plan of another target (Megatron plans have megatron_args.txt).
    """
    if config.target != "deepspeed":
        raise ConfigError(f"Megatron-DeepSpeed flags are for DeepSpeed plans, got target {config.target}")
    args = ["--deepspeed", "--deepspeed_config", ds_config_path,
            "--tensor-model-parallel-size", str(config.tp), "--pipeline-model-parallel-size", str(config.pp)]
    if config.pp == 1:  # the plain model on DeepSpeed's plain engine (ZeRO 2/3 need it)
        args += ["--no-pipeline-parallel"]
    args += ["--zero-stage", str(config.zero_stage),
             "--micro-batch-size", str(config.micro_batch_size),
             "--global-batch-size", str(config.global_batch_size),
             "--num-layers", str(spec.num_layers), "--hidden-size", str(spec.hidden_size),
             "--ffn-hidden-size", str(spec.ffn_hidden_size), "--num-attention-heads", str(spec.num_heads)]
    if spec.kv_heads != spec.num_heads:
        args += ["--num-key-value-heads", str(spec.kv_heads)]
    args += ["--seq-length", str(spec.seq_len), "--max-position-embeddings", str(spec.seq_len)]
    if spec.norm == "rmsnorm":
        args += ["--normalization", "rmsnorm", "--disable-bias-linear"]
    if spec.mlp == "swiglu":
        args += ["--swiglu"]
    if spec.position == "rope":
        args += ["--use-rotary-position-embeddings", "--no-position-embedding"]
    if not spec.tied_embeddings:
        args += ["--untie-embeddings-and-output-weights"]
    if config.recompute_interval > 0:  # GPTModelPipe's activation_checkpoint_interval; the plain model's chunk
        args += ["--checkpoint-activations", "--checkpoint-num-layers", str(config.recompute_interval),
                 "--deepspeed-activation-checkpointing"]
    if config.sequence_parallel:
        args += ["--sequence-parallel"]
    if spec.attention == "flash":
        args += ["--use-flash-attn-v2"]
    return args + dtype_flags(config.dtype)


def check_megatron_deepspeed_args(args: Sequence[str], *, world_size: int,
                                  ds_config: Mapping[str, Any] | None = None) -> None:
    """Raise ConfigError naming the first Megatron-DeepSpeed rule (module docstring) these flags break.

    ``ds_config``: the ``ds_config.json`` they name, checked against them (batch sizes, ZeRO stage, precision).
    """
    a = as_flags(args, WHAT)
    if "--deepspeed" not in a or not isinstance(a.get("--deepspeed_config"), str):
        raise ConfigError(f"{WHAT}: GPTModelPipe runs under --deepspeed --deepspeed_config FILE")
    num = _numbers(a)
    tp, pp = num("--tensor-model-parallel-size", 1), num("--pipeline-model-parallel-size", 1)
    if world_size % (tp * pp):
        raise ConfigError(f"world size {world_size} is not divisible by tp {tp} * pp {pp}")
    dp = world_size // (tp * pp)
    if "--no-pipeline-parallel" in a and pp != 1:
        raise ConfigError(f"--no-pipeline-parallel needs --pipeline-model-parallel-size 1, got {pp}")
    zero = flag_number(a, "--zero-stage", 1, what=WHAT, minimum=0)
    if zero > 3:
        raise ConfigError(f"--zero-stage must be 0, 1, 2 or 3, got {zero}")
    if "--no-pipeline-parallel" not in a and zero >= 2:
        raise ConfigError(f"ZeRO stage {zero} with GPTModelPipe: DeepSpeed's pipeline engine allows only ZeRO 0 or 1 "
                          "(give --no-pipeline-parallel at pp 1)")
    mbs = num("--micro-batch-size")
    gbs = num("--global-batch-size", mbs * dp)
    if gbs % (mbs * dp):
        raise ConfigError(f"global batch {gbs} is not divisible by micro batch {mbs} * dp {dp}")
    layers, hidden, heads = num("--num-layers"), num("--hidden-size"), num("--num-attention-heads")
    if "--no-pipeline-parallel" not in a and layers < pp:
        raise ConfigError(f"{layers} transformer layers cannot fill {pp} pipeline stages ({SPLIT})")
    if hidden % heads:
        raise ConfigError(f"hidden size {hidden} is not divisible by {heads} attention heads")
    kv = num("--num-key-value-heads", heads)
    if heads % tp or kv % tp or heads % kv:
        raise ConfigError(f"{heads} attention heads and {kv} key/value heads: both divisible by tp {tp}, "
                          "and the heads by the key/value heads")
    if num("--max-position-embeddings") < num("--seq-length"):
        raise ConfigError(f"max position embeddings {a['--max-position-embeddings']} < seq length {a['--seq-length']}")
    _check_recompute(a, num)
    if "--sequence-parallel" in a and tp == 1:
        raise ConfigError("--sequence-parallel needs tp > 1 (Megatron-DeepSpeed switches it off at tp 1)")
    if "--bf16" in a and "--fp16" in a:
        raise ConfigError("--bf16 and --fp16 are exclusive")
    if ds_config is not None:
        _check_ds_config(a, ds_config, micro=mbs, global_batch=gbs, dp=dp, zero=zero)


def _numbers(a: Flags):
    def num(flag: str, default: int | None = None) -> int:
        return flag_number(a, flag, default, what=WHAT)
    return num


def _check_recompute(a: Flags, num) -> None:
    if "--distribute-checkpointed-activations" in a and "--checkpoint-activations" not in a:
        raise ConfigError("--distribute-checkpointed-activations needs --checkpoint-activations")
    if a.get("--recompute-granularity") == "selective" and "--recompute-method" in a:
        raise ConfigError("selective recompute takes no --recompute-method")
    if "--checkpoint-num-layers" in a:
        num("--checkpoint-num-layers")
        if "--checkpoint-activations" not in a:
            raise ConfigError("--checkpoint-num-layers has no effect without --checkpoint-activations")


def _check_ds_config(a: Flags, ds: Mapping[str, Any], *, micro: int, global_batch: int, dp: int, zero: int) -> None:
    """The engine's config must say what the flags say (DeepSpeed's batch rule, ZeRO stage, precision)."""
    facts = (("train_micro_batch_size_per_gpu", ds.get("train_micro_batch_size_per_gpu"), micro),
             ("train_batch_size", ds.get("train_batch_size"), global_batch),
             ("gradient_accumulation_steps", ds.get("gradient_accumulation_steps"), global_batch // (micro * dp)),
             ("zero_optimization.stage", (ds.get("zero_optimization") or {}).get("stage", 0), zero),
             ("bf16.enabled", bool((ds.get("bf16") or {}).get("enabled")), "--bf16" in a),
             ("fp16.enabled", bool((ds.get("fp16") or {}).get("enabled")), "--fp16" in a))
    for key, got, want in facts:
        if got is not None and got != want:
            raise ConfigError(f"ds_config.json {key} is {got} but the flags mean {want}")


def header_lines(config: ParallelConfig, partition: str, *, nodes: int, per_node: int) -> list[str]:
    """Comment lines of megatron_deepspeed_args.txt: how to launch it, and what differs from pptune's estimate."""
    lines = [f"Megatron-DeepSpeed (microsoft/Megatron-DeepSpeed, checked against {SOURCE_COMMIT[:7]}) flags for this plan:",
             f"  deepspeed --num_nodes {nodes} --num_gpus {per_node} pretrain_gpt.py "
             "$(grep -v '^#' megatron_deepspeed_args.txt) <data, tokenizer, lr and iteration flags>",
             "  run it in this directory (ds_config.json is the engine config pptune wrote)."]
    if config.pp > 1 and not partition.startswith("type:"):
        lines.append(f"GPTModelPipe splits the layers {SPLIT} (fixed in megatron/model/gpt_model.py); this plan's "
                     f"{partition} split runs only in pptune's runtime, so stage times differ from the estimate.")
    return lines
