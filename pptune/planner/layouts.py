"""Layouts: the tp x cp x pp x dp factorisations of a GPU count that a model accepts, and the user's pinned choices.

Rules: tp inside one node and dividing the attention heads and the KV heads (Megatron's column/row split);
pp at most the number of transformer blocks (no stage without a block); dp divides the global batch
(DeepSpeed's batch rule ``train_batch_size = micro * gradient_accumulation_steps * dp``). The first three are
``pptune.target_checks``' rules and words (``tp_node_rule``, ``heads_rule``, ``stage_blocks_rule``).

Context parallelism (Megatron only) is offered for long sequences: cp a power of two >= 2 with the sequence a
multiple of 2 x cp (Megatron's rule) and at least ``CP_MIN_TOKENS`` tokens left per rank, when the sequence is
``CP_MIN_SEQUENCE`` tokens or longer (shorter ones rarely need it: their activations fit with tp and recompute);
``--cp N`` pins it. The ranks are ordered tp-cp-dp-pp (``pptune.cost.context_parallel``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pptune.errors import ConfigError
from pptune.target_checks import heads_rule, stage_blocks_rule, tp_node_rule


@dataclass(frozen=True, kw_only=True, slots=True)
class Fixed:
    """Dimensions the user pinned (``--tp``, ``--zero`` ...); ``None`` means: search it."""

    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    cp: int | None = None
    micro_batch_size: int | None = None
    zero_stage: int | None = None
    recompute: str | None = None
    schedule: str | None = None
    vpp: int | None = None
    partition: str | None = None
    sequence_parallel: bool | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Layout:
    """One factorisation of the GPUs."""

    tp: int
    pp: int
    dp: int
    cp: int = 1

    @property
    def key(self) -> str:
        cp = f"-cp{self.cp}" if self.cp > 1 else ""
        return f"tp{self.tp}{cp}-pp{self.pp}-dp{self.dp}"


CP_MIN_SEQUENCE = 32768  # sequences this long or longer are offered context parallelism
CP_MIN_TOKENS = 4096  # tokens each context-parallel rank keeps at least (smaller blocks leave the ring exposed)


def context_parallel_sizes(*, seq_len: int | None, target: str, fixed_cp: int | None) -> tuple[int, ...]:
    """The cp sizes a space tries: the pinned one, else 1 and (Megatron, long sequences) the powers of two that
    split the sequence into 2 x cp chunks of at least CP_MIN_TOKENS / 2 tokens."""
    if fixed_cp is not None:
        return (fixed_cp,)
    if target != "megatron" or not seq_len or seq_len < CP_MIN_SEQUENCE:
        return (1,)
    out, cp = [1], 2
    while seq_len // cp >= CP_MIN_TOKENS and seq_len % (2 * cp) == 0:
        out.append(cp)
        cp *= 2
    return tuple(out)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def layouts_for(*, gpus: int, gpus_per_node: int, global_batch_size: int, num_blocks: int, num_heads: int | None,
                num_kv_heads: int | None, allowed_tp: tuple[int, ...] | None, fixed: Fixed,
                model_name: str = "the model", cluster_name: str = "the cluster",
                cps: tuple[int, ...] = (1,), tp_across_nodes: bool = False) -> tuple[Layout, ...]:
    """Every tp x cp x pp x dp of the GPUs the model accepts (cp from ``cps``), or ConfigError naming the rule
    that emptied it.

    tp stays inside a node unless ``tp_across_nodes`` or a pinned tp (``fixed.tp``): then tp groups spanning whole
    nodes are offered too, priced at the inter-node rate like any other layout (``plan`` also widens the space so
    when no layout inside a node fits in memory).

    ``model_name`` and ``cluster_name`` only word the messages.
    """
    reasons: dict[str, str] = {}  # rule -> its first message (one reason per rule)

    def keep(tps: list[int], rule: str, why) -> list[int]:
        """The tps ``why`` (tp -> message or None) lets through; the first rejection's message when none is."""
        found = {t: why(t) for t in tps}
        ok = [t for t in tps if found[t] is None]
        if tps and not ok:
            reasons.setdefault(rule, found[tps[0]])
        return ok

    tps = [t for t in _divisors(gpus) if fixed.tp in (None, t)]
    if fixed.tp is not None and gpus % fixed.tp:
        raise ConfigError(f"--tp {fixed.tp} does not divide {gpus} GPUs")
    across = tp_across_nodes or fixed.tp is not None
    tps_ok = keep(tps, "tp-node", lambda t: tp_node_rule(t, gpus_per_node, cluster_name, across_nodes=across))
    tps_ok = keep(tps_ok, "heads-tp", lambda t: heads_rule(num_heads, t, model_name)
                  or heads_rule(num_kv_heads, t, model_name, kv=True))
    if allowed_tp is not None:
        tps_ok = [t for t in tps_ok if t in allowed_tp]
        if not tps_ok:
            reasons.setdefault("profile-tp", f"the profile allows tp in {list(allowed_tp)}")
    out: list[Layout] = []
    min_dp: int | None = None
    for tp in tps_ok:
        for cp in cps:
            if (gpus // tp) % cp:
                reasons.setdefault("cp-gpus", f"cp {cp} x tp {tp} does not divide {gpus} GPUs")
                continue
            for pp in _divisors(gpus // (tp * cp)):
                if fixed.pp not in (None, pp):
                    continue
                too_deep = stage_blocks_rule(pp, num_blocks, model_name)
                if too_deep:
                    reasons.setdefault("stage-blocks", too_deep)
                    continue
                dp = gpus // (tp * cp * pp)
                if fixed.dp not in (None, dp):
                    continue
                min_dp = dp if min_dp is None else min(min_dp, dp)
                if global_batch_size % dp:
                    reasons.setdefault("dp-batch", f"dp must divide the global batch {global_batch_size}")
                    continue
                out.append(Layout(tp=tp, pp=pp, dp=dp, cp=cp))
    if out:
        return tuple(out)
    if min_dp is not None and global_batch_size < min_dp:
        raise ConfigError(
            f"global batch {global_batch_size} is smaller than the smallest data-parallel size {min_dp} "
            f"({gpus} GPUs): every replica needs at least one sample"
        )
    pins = ", ".join(f"--{k} {v}" for k, v in (("tp", fixed.tp), ("cp", fixed.cp), ("pp", fixed.pp), ("dp", fixed.dp))
                     if v is not None)
    why = "; ".join(reasons.values()) or "the fixed tp/pp/dp do not multiply to the GPU count"
    raise ConfigError(f"{gpus} GPUs factor into no tp*pp*dp layout the model accepts{' with ' + pins if pins else ''}: {why}")
