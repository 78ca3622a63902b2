"""check_megatron_args: the Megatron-LM rules a set of flags must meet, checked before anyone launches them.

Rules from Megatron-LM's ``validate_args`` (megatron/training/arguments.py), ``get_num_layers_to_build``
(megatron/core/transformer/transformer_block.py), ``PipelineParallelLayerLayout`` and TransformerConfig, also
listed in docs/REFERENCE.md §3: world divisible by tp*pp*cp; global batch divisible by micro batch * dp; layers divisible
by pp unless first/last stage sizes are given (then the rest divisible by the remaining stages) or a layout is;
at most one of the virtual-stage flags and the layout; with virtual stages the layers per stage divisible by the
layers per virtual stage, pp > 2 (without p2p overlap) and the micro-batch count a multiple of pp (default group
size); ``--overlap-param-gather`` needs the distributed optimizer and ``--overlap-grad-reduce``; full recompute
needs a method and a layer count, selective takes no method; hidden divisible by heads, heads and query groups by tp;
max positions >= seq length; ``--attention-backend`` one of AttnBackend's names (megatron/core/transformer/enums.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from pptune.errors import ConfigError

Flags = dict[str, "str | bool"]
# --attention-backend's choices: megatron/core/transformer/enums.py AttnBackend (flash, fused, unfused, local, auto)
ATTENTION_BACKENDS = ("flash", "fused", "unfused", "local", "auto")


def as_flags(args: Sequence[str], what: str = "megatron args") -> Flags:
    """``--flag value`` pairs and bare ``--flag``s as a dict (a flag given twice, or a stray value, is an error)."""
    out: Flags = {}
    i = 0
    while i < len(args):
        flag = args[i]
        if not flag.startswith("--"):
            raise ConfigError(f"{what}: expected a --flag, got {flag!r}")
        if flag in out:
            raise ConfigError(f"{what}: {flag} given twice")
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[flag] = args[i + 1]
            i += 2
        else:
            out[flag] = True
            i += 1
    return out


def flag_number(a: Flags, flag: str, default: int | None = None, *, what: str = "megatron args",
                minimum: int = 1) -> int:
    """The integer value of ``flag`` (``default`` when absent; ConfigError when required, valueless or too small)."""
    value = a.get(flag)
    if value is None or value is True:
        if default is None:
            raise ConfigError(f"{what}: {flag} needs a value" if value is True else f"{what}: {flag} is required")
        return default
    try:
        n = int(str(value))
    except ValueError:
        raise ConfigError(f"{what}: {flag} must be an integer, got {value!r}") from None
    if n < minimum:
        raise ConfigError(f"{what}: {flag} must be {'positive' if minimum == 1 else f'>= {minimum}'}, got {n}")
    return n


def parse_layout(text: str) -> list[str]:
    """Megatron's layout string unrolled to one string per virtual stage (``Et*2|tL`` -> ``['Ett', 'tL']``)."""
    text = text.replace(",", "")
    text = re.sub(r"\(([^)]+)\)\*(\d+)", lambda m: m.group(1) * int(m.group(2)), text)
    text = re.sub(r"(.)\*(\d+)", lambda m: m.group(1) * int(m.group(2)), text)
    stages = text.split("|")
    for stage in stages:
        bad = set(stage) - set("EtLm")
        if bad:
            raise ConfigError(f"pipeline layout {text!r}: unknown layer letters {sorted(bad)} (E, t, m, L)")
    return stages


def check_megatron_args(args: Sequence[str], *, world_size: int) -> None:
    """Raise ConfigError naming the first Megatron-LM rule these flags break; return None when they pass."""
    a = as_flags(args)

    def num(flag: str, default: int | None = None) -> int:
        return flag_number(a, flag, default)

    tp, pp = num("--tensor-model-parallel-size", 1), num("--pipeline-model-parallel-size", 1)
    cp = num("--context-parallel-size", 1)
    if world_size % (tp * pp * cp):
        raise ConfigError(f"world size {world_size} is not divisible by tp {tp} * pp {pp} * cp {cp}")
    dp = world_size // (tp * pp * cp)
    mbs = num("--micro-batch-size")
    gbs = num("--global-batch-size", mbs * dp)
    if gbs % (mbs * dp):
        raise ConfigError(f"global batch {gbs} is not divisible by micro batch {mbs} * dp {dp}")
    layers, hidden, heads = num("--num-layers"), num("--hidden-size"), num("--num-attention-heads")
    if hidden % heads:
        raise ConfigError(f"hidden size {hidden} is not divisible by {heads} attention heads")
    if heads % tp:
        raise ConfigError(f"{heads} attention heads are not divisible by tp {tp}")
    if "--num-query-groups" in a:
        if "--group-query-attention" not in a:
            raise ConfigError("--num-query-groups has no effect without --group-query-attention")
        groups = num("--num-query-groups")
        if heads % groups or groups % tp:
            raise ConfigError(f"{groups} query groups must divide {heads} heads and be divisible by tp {tp}")
    seq, max_pos = num("--seq-length"), num("--max-position-embeddings")
    if max_pos < seq:
        raise ConfigError(f"max position embeddings {max_pos} < seq length {seq}")
    if cp > 1 and seq % (2 * cp):  # validate_args (arguments.py, NVIDIA/Megatron-LM d98e8a6)
        raise ConfigError(f"seq length {seq} is not a multiple of 2 x context-parallel size {cp}")
    _check_split(a, num, layers=layers, pp=pp, num_microbatches=gbs // (mbs * dp))
    _check_recompute(a, num)
    if "--overlap-param-gather" in a and not ("--use-distributed-optimizer" in a and "--overlap-grad-reduce" in a):
        raise ConfigError("--overlap-param-gather needs --use-distributed-optimizer and --overlap-grad-reduce")
    backend = a.get("--attention-backend")
    if backend is not None and backend not in ATTENTION_BACKENDS:
        raise ConfigError(f"--attention-backend must be one of {', '.join(ATTENTION_BACKENDS)}, got {backend!r}")
    if "--sequence-parallel" in a and tp == 1:
        raise ConfigError("--sequence-parallel needs tp > 1 (Megatron switches it off at tp 1)")
    if "--bf16" in a and "--fp16" in a:
        raise ConfigError("--bf16 and --fp16 are exclusive")


def _check_split(a: Flags, num: Callable[..., int], *, layers: int, pp: int, num_microbatches: int) -> None:
    vflags = [f for f in ("--num-layers-per-virtual-pipeline-stage", "--num-virtual-stages-per-pipeline-rank",
                          "--pipeline-model-parallel-layout") if f in a]
    if len(vflags) > 1:
        raise ConfigError(f"give at most one of {', '.join(vflags)}")
    uneven = [f for f in ("--decoder-first-pipeline-num-layers", "--decoder-last-pipeline-num-layers") if f in a]
    vpp = 1
    if "--pipeline-model-parallel-layout" in a:
        if uneven:
            raise ConfigError("--pipeline-model-parallel-layout already fixes every stage; drop the first/last stage sizes")
        vpp = _check_layout(str(a["--pipeline-model-parallel-layout"]), layers=layers, pp=pp)
    elif uneven:
        if "--num-layers-per-virtual-pipeline-stage" in a:
            raise ConfigError("uneven first/last stages need --num-virtual-stages-per-pipeline-rank, "
                              "not --num-layers-per-virtual-pipeline-stage")
        rest, stages = layers, pp
        for flag in uneven:
            rest -= num(flag)
            stages -= 1
        if rest < 0 or (stages > 0 and (rest == 0 or rest % stages)):
            raise ConfigError(f"{layers} layers minus the first/last stage sizes leave {rest} for {stages} "
                              f"middle stages: not a positive multiple")
        if stages == 0 and rest:
            raise ConfigError(f"first/last stage sizes cover {layers - rest} of {layers} layers with pp {pp}")
        vpp = num("--num-virtual-stages-per-pipeline-rank", 1)
    else:
        if layers % pp:
            raise ConfigError(f"{layers} layers are not divisible by pp {pp} (give first/last stage sizes or a layout)")
        if "--num-layers-per-virtual-pipeline-stage" in a:
            k = num("--num-layers-per-virtual-pipeline-stage")
            if (layers // pp) % k:
                raise ConfigError(f"{layers // pp} layers per stage are not divisible by {k} layers per virtual stage")
            vpp = layers // pp // k
        else:
            vpp = num("--num-virtual-stages-per-pipeline-rank", 1)
    if vpp > 1:
        if pp <= 2:
            raise ConfigError(f"the interleaved schedule needs pp > 2 (without p2p overlap), got pp {pp}")
        if num_microbatches % pp:
            raise ConfigError(f"interleaved schedule: {num_microbatches} micro-batches are not a multiple of pp {pp}")


def _check_layout(text: str, *, layers: int, pp: int) -> int:
    stages = parse_layout(text)
    if len(stages) % pp:
        raise ConfigError(f"pipeline layout has {len(stages)} stages, not a multiple of pp {pp}")
    flat = "".join(stages)
    if not flat.startswith("E") or flat.count("E") != 1:
        raise ConfigError(f"pipeline layout {text!r}: the embedding E must come first, exactly once")
    if not flat.endswith("L") or flat.count("L") != 1:
        raise ConfigError(f"pipeline layout {text!r}: the loss L must come last, exactly once")
    if flat.count("t") != layers:
        raise ConfigError(f"pipeline layout {text!r} holds {flat.count('t')} decoder layers, --num-layers is {layers}")
    return len(stages) // pp


def _check_recompute(a: Flags, num: Callable[..., int]) -> None:
    granularity = a.get("--recompute-granularity")
    method = a.get("--recompute-method")
    if granularity is None:
        if method is not None or "--recompute-num-layers" in a:
            raise ConfigError("--recompute-method/--recompute-num-layers need --recompute-granularity full")
    elif granularity == "selective":
        if method is not None:
            raise ConfigError("selective recompute takes no --recompute-method")
    elif granularity == "full":
        if method not in ("uniform", "block"):
            raise ConfigError(f"full recompute needs --recompute-method uniform or block, got {method!r}")
        num("--recompute-num-layers")
    else:
        raise ConfigError(f"--recompute-granularity must be full or selective, got {granularity!r}")
