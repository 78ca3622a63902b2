"""Layouts: the tp x pp x dp factorisations of a GPU count that a model accepts, and the user's pinned choices.

Rules: tp inside one node and dividing the attention heads and the KV heads (Megatron's column/row split);
pp at most the number of transformer blocks (no stage without a block); dp divides the global batch
(DeepSpeed's batch rule ``train_batch_size = micro * gradient_accumulation_steps * dp``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pptune.errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class Fixed:
    """Dimensions the user pinned (``--tp``, ``--zero`` ...); ``None`` means: search it."""

    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
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

    @property
    def key(self) -> str:
        return f"tp{self.tp}-pp{self.pp}-dp{self.dp}"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def layouts_for(*, gpus: int, gpus_per_node: int, global_batch_size: int, num_blocks: int, num_heads: int | None,
             num_kv_heads: int | None, allowed_tp: tuple[int, ...] | None, fixed: Fixed) -> tuple[Layout, ...]:
    """Every tp x pp x dp of the GPUs the model accepts, or ConfigError naming the rule that emptied it."""
    reasons: list[str] = []
    tps = [t for t in _divisors(gpus) if fixed.tp in (None, t)]
    if fixed.tp is not None and gpus % fixed.tp:
        raise ConfigError(f"--tp {fixed.tp} does not divide {gpus} GPUs")
    tps_ok = [t for t in tps if t <= gpus_per_node]
    if not tps_ok:
        reasons.append(f"tp must be <= {gpus_per_node} GPUs per node")
    if num_heads is not None:
        kv = num_kv_heads or num_heads
        tps_ok = [t for t in tps_ok if num_heads % t == 0 and kv % t == 0]
        if not tps_ok:
            reasons.append(f"tp must divide {num_heads} heads and {kv} KV heads")
    if allowed_tp is not None:
        tps_ok = [t for t in tps_ok if t in allowed_tp]
        if not tps_ok:
            reasons.append(f"the profile allows tp in {list(allowed_tp)}")
    out: list[Layout] = []
    min_dp: int | None = None
    for tp in tps_ok:
        for pp in _divisors(gpus // tp):
            if fixed.pp not in (None, pp):
                continue
            if pp > num_blocks:
                reasons.append(f"pp must be <= {num_blocks} blocks")
                continue
            dp = gpus // (tp * pp)
            if fixed.dp not in (None, dp):
                continue
            min_dp = dp if min_dp is None else min(min_dp, dp)
            if global_batch_size % dp:
                reasons.append(f"dp must divide the global batch {global_batch_size}")
                continue
            out.append(Layout(tp=tp, pp=pp, dp=dp))
    if out:
        return tuple(out)
    if min_dp is not None and global_batch_size < min_dp:
        raise ConfigError(
            f"global batch {global_batch_size} is smaller than the smallest data-parallel size {min_dp} "
            f"({gpus} GPUs): every replica needs at least one sample"
        )
    pins = ", ".join(f"--{k} {v}" for k, v in (("tp", fixed.tp), ("pp", fixed.pp), ("dp", fixed.dp)) if v is not None)
    why = "; ".join(dict.fromkeys(reasons)) or "the fixed tp/pp/dp do not multiply to the GPU count"
    raise ConfigError(f"{gpus} GPUs factor into no tp*pp*dp layout the model accepts{' with ' + pins if pins else ''}: {why}")
