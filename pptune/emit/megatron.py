"""Megatron-LM command-line flags for a plan (``megatron_args.txt``) and a checker of Megatron's own rules.

The flags reproduce the estimate's exact split; ``pptune.emit.megatron_check.check_megatron_args`` checks them
against Megatron-LM's own rules (re-exported here).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

from pptune.emit.megatron_check import check_megatron_args
from pptune.errors import ConfigError
from pptune.model.spec import TransformerSpec
from pptune.parallel import ParallelConfig
from pptune.target_checks import zero_rule
from pptune.targets import MEGATRON

__all__ = ["check_megatron_args", "dtype_flags", "format_args", "layout_string", "megatron_args", "parse_args_text",
           "split_flags", "stage_block_counts"]


def stage_block_counts(roles: Sequence[str], boundaries: Sequence[int]) -> tuple[int, ...]:
    """Transformer blocks in each chunk of ``boundaries`` (Megatron counts only blocks; embedding and head ride along)."""
    return tuple(sum(1 for r in roles[a:b] if r == "block") for a, b in itertools.pairwise(boundaries))


def layout_string(roles: Sequence[str], boundaries: Sequence[int]) -> str:
    """Megatron's ``--pipeline-model-parallel-layout`` for a split: ``E`` embedding, ``t`` block, ``L`` head+loss.

    Chunks are listed in model order, which is Megatron's order too (virtual stage ``v`` of rank ``r`` is entry
    ``v * pp + r``, megatron/core/transformer/pipeline_parallel_layer_layout.py), e.g. ``Et*3|t*4|t*3|t*2L``.
    Three or more equal chunks in a row before the last are written ``(t*2|)*k``, which Megatron's
    ``parse_str_to_list`` unrolls before ``x*n`` (NVIDIA/Megatron-LM d98e8a6), so 64 chunks stay one short line.
    """
    letters = {"embedding": "E", "block": "t", "head": "L"}
    stages = []
    for a, b in itertools.pairwise(boundaries):
        text = ""
        for role in roles[a:b]:
            if role not in letters:
                raise ConfigError(f"Megatron has no layer for a profile layer of role {role!r}")
            text += letters[role]
        stages.append(re.sub(r"t{2,}", lambda m: f"t*{len(m.group(0))}", text))
    return _repeats(stages)


def _repeats(stages: list[str]) -> str:
    """``|``-joined stages with each run of 3+ equal stages (not the last stage) as ``(stage|)*k``."""
    out, i = "", 0
    while i < len(stages):
        j = i
        while j + 1 < len(stages) - 1 and stages[j + 1] == stages[i]:
            j += 1
        k = j - i + 1
        if k >= 3 and j < len(stages) - 1:
            out += f"({stages[i]}|)*{k}"
        else:
            out += "|".join(stages[i:j + 1]) + ("|" if j < len(stages) - 1 else "")
        i = j + 1
    return out


def split_flags(roles: Sequence[str], boundaries: Sequence[int], *, pp: int, vpp: int = 1) -> list[str]:
    """Megatron flags that build exactly the chunks of ``boundaries`` (pp*vpp chunks over embedding, blocks, head).

    Even splits need no flag (``--num-layers-per-virtual-pipeline-stage`` when interleaved); splits whose middle
    stages are equal use ``--decoder-first/last-pipeline-num-layers`` (older Megatron-LM understands them);
    anything else uses ``--pipeline-model-parallel-layout`` (Megatron-LM core 0.14 and later).
    """
    counts = stage_block_counts(roles, boundaries)
    assert len(counts) == pp * vpp, (counts, pp, vpp)
    if min(counts) > 0:
        if vpp > 1 and len(set(counts)) == 1:
            return ["--num-layers-per-virtual-pipeline-stage", str(counts[0])]
        if vpp == 1 and len(set(counts)) == 1:
            return []
        if vpp == 1 and pp == 2:
            return ["--decoder-first-pipeline-num-layers", str(counts[0])]
        if vpp == 1 and len(set(counts[1:-1])) == 1:
            middle = counts[1]
            out: list[str] = []
            if counts[0] != middle:
                out += ["--decoder-first-pipeline-num-layers", str(counts[0])]
            if counts[-1] != middle:
                out += ["--decoder-last-pipeline-num-layers", str(counts[-1])]
            return out
    return ["--pipeline-model-parallel-layout", layout_string(roles, boundaries)]


def megatron_args(config: ParallelConfig, spec: TransformerSpec, *, roles: Sequence[str],
                  boundaries: Sequence[int]) -> list[str]:
    """The Megatron-LM flags of a configuration, one flag or flag+value per list item pair.

    Args:
        config: the configuration (either target; DeepSpeed ZeRO-1 maps to ``--use-distributed-optimizer``).
        spec: the model's shape.
        roles: the profile's layer roles in order (``embedding``, ``block`` ..., ``head``).
        boundaries: the estimate's chunk boundaries over those layers (pp*vpp + 1 indices).

    Raises:
        ConfigError: ZeRO 2/3 (Megatron's distributed optimizer shards optimizer states only), or a layer
            Megatron has no place for.
    """
    message = zero_rule(MEGATRON, config.zero_stage, config.pp, planned=True)  # the distributed optimizer is ZeRO-1
    if message:
        raise ConfigError(message)
    args = [
        "--tensor-model-parallel-size", str(config.tp),
        "--pipeline-model-parallel-size", str(config.pp),
        *(["--context-parallel-size", str(config.cp)] if config.cp > 1 else []),
        *split_flags(roles, boundaries, pp=config.pp, vpp=config.vpp),
        "--micro-batch-size", str(config.micro_batch_size),
        "--global-batch-size", str(config.global_batch_size),
        "--num-layers", str(spec.num_layers),
        "--hidden-size", str(spec.hidden_size),
        "--ffn-hidden-size", str(spec.ffn_hidden_size),
        "--num-attention-heads", str(spec.num_heads),
    ]
    if spec.kv_heads != spec.num_heads:
        args += ["--group-query-attention", "--num-query-groups", str(spec.kv_heads)]
    args += ["--seq-length", str(spec.seq_len), "--max-position-embeddings", str(spec.seq_len)]
    if spec.norm == "rmsnorm":
        args += ["--normalization", "RMSNorm"]
    if spec.mlp == "swiglu":
        args += ["--swiglu"]
    if spec.position == "rope":
        args += ["--position-embedding-type", "rope"]
    if not spec.tied_embeddings:
        args += ["--untie-embeddings-and-output-weights"]
    if spec.norm == "rmsnorm":  # Llama-style blocks have no biases
        args += ["--disable-bias-linear"]
    if config.recompute == "selective":
        args += ["--recompute-granularity", "selective"]
    elif config.recompute_interval > 0:
        # uniform method: checkpoint the input of every group of K blocks = DeepSpeed's activation_checkpoint_interval K
        args += ["--recompute-granularity", "full", "--recompute-method", "uniform",
                 "--recompute-num-layers", str(config.recompute_interval)]
    if config.zero_stage == 1:
        args += ["--use-distributed-optimizer"]
    # The overlap flags the config priced (a DeepSpeed plan, which DeepSpeed's engine runs without them, gets
    # Megatron's own best: both on).
    megatron = config.target == "megatron"
    if config.dp > 1 and (config.overlap_grad_reduce or not megatron):
        args += ["--overlap-grad-reduce"]
        if config.zero_stage == 1 and (config.overlap_param_gather or not megatron):
            args += ["--overlap-param-gather"]
    if spec.attention == "unfused":  # Megatron's own softmax (megatron/core/transformer/enums.py AttnBackend)
        args += ["--attention-backend", "unfused"]
    if config.sequence_parallel:
        args += ["--sequence-parallel"]
    return args + dtype_flags(config.dtype)


def dtype_flags(dtype: str) -> list[str]:
    """Megatron's precision flag (Megatron-LM and Megatron-DeepSpeed alike): ``--bf16``, ``--fp16`` or none (fp32)."""
    return {"bf16": ["--bf16"], "fp16": ["--fp16"]}.get(dtype, [])


def format_args(args: Sequence[str], header: Sequence[str] = ()) -> str:
    """One flag (with its value) per line, comment lines first; ``$(grep -v '^#' FILE)`` feeds it to a shell."""
    lines = [f"# {h}" if h else "#" for h in header]
    i = 0
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            lines.append(f"{args[i]} {args[i + 1]}")
            i += 2
        else:
            lines.append(args[i])
            i += 1
    return "\n".join(lines) + "\n"


def parse_args_text(text: str) -> list[str]:
    """The flags of a ``megatron_args.txt`` (comments and blank lines dropped)."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.extend(line.split())
    return out
