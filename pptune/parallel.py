"""ParallelConfig: one candidate way to run a model (tp x pp x dp, batches, schedule, ZeRO, recompute, split)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from pptune.errors import ConfigError
from pptune.target_checks import check, overlap_defaults
from pptune.targets import SCHEDULES, TARGETS

Schedule = Literal["gpipe", "1f1b", "interleaved_1f1b", "zb_h1"]
Dtype = Literal["fp32", "bf16", "fp16"]
Target = Literal["deepspeed", "megatron"]  # = pptune.targets.TARGETS
DTYPES: tuple[str, ...] = ("fp32", "bf16", "fp16")
RECOMPUTE_NAMED: tuple[str, ...] = ("none", "selective", "full")
PARTITION_NAMED: tuple[str, ...] = ("uniform", "parameters", "balanced")


@dataclass(frozen=True, kw_only=True, slots=True)
class ParallelConfig:
    """A candidate configuration. Keyword-only so that tp and pp cannot be swapped.

    ``num_microbatches`` is DeepSpeed's ``gradient_accumulation_steps``: micro-batches per pipeline step
    per data-parallel replica. ``recompute`` is ``none``, ``selective``, ``full`` (every layer), or
    ``every:K`` (DeepSpeed's ``activation_checkpoint_interval`` = K). ``partition`` is ``uniform``,
    ``parameters``, ``type:<regex>`` (DeepSpeed's own methods) or ``balanced`` (best contiguous split by time).
    """

    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1  # Megatron context parallelism: each sequence split over cp ranks (world = tp x cp x pp x dp)
    micro_batch_size: int = 1
    num_microbatches: int = 1
    schedule: Schedule = "1f1b"
    vpp: int = 1  # model chunks per pipeline rank (interleaved_1f1b only)
    zero_stage: int = 0
    recompute: str = "none"
    dtype: Dtype = "bf16"
    partition: str = "parameters"
    sequence_parallel: bool = False  # Megatron sequence parallelism (tp > 1 only)
    target: Target = "deepspeed"
    # Megatron's --overlap-grad-reduce / --overlap-param-gather; None: the target's default (TargetRules), which
    # __post_init__ writes in, so a config always states what it prices. DeepSpeed always reduces after the backward.
    overlap_grad_reduce: bool | None = None
    overlap_param_gather: bool | None = None

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "dp", "cp", "micro_batch_size", "num_microbatches", "vpp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"zero stage must be 0, 1, 2 or 3, got {self.zero_stage!r}")
        if self.target in TARGETS:  # an unknown target: check() below names it
            grad, param = overlap_defaults(self.target, self.pp, self.zero_stage, self.overlap_grad_reduce)
            object.__setattr__(self, "overlap_grad_reduce", grad if self.overlap_grad_reduce is None else self.overlap_grad_reduce)
            object.__setattr__(self, "overlap_param_gather", param if self.overlap_param_gather is None else self.overlap_param_gather)
        check(self, step=False)  # the target rules (pptune.target_checks), one wording each
        _ = self.recompute_interval  # validates the recompute string
        _check_partition(self.partition)

    @property
    def world_size(self) -> int:
        return self.tp * self.cp * self.pp * self.dp

    @property
    def dp_cp(self) -> int:
        """Ranks of Megatron's data-parallel group with context parallelism: gradients are reduced and the
        distributed optimizer shards over dp x cp (``get_data_parallel_group(with_context_parallel=True)``), and in
        the rank order tp-cp-dp-pp those ranks are one group of stride tp, as a dp group of that size would be."""
        return self.dp * self.cp

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.num_microbatches * self.dp

    @property
    def recompute_interval(self) -> int:
        """DeepSpeed's activation_checkpoint_interval: 0 none, 1 every layer (full), K every K layers.

        ``selective`` returns 0 (it recomputes only attention internals, not whole layers).
        """
        r = self.recompute
        if r in ("none", "selective"):
            return 0
        if r == "full":
            return 1
        m = re.fullmatch(r"every:(\d+)", r)
        if not m or int(m.group(1)) < 1:
            raise ConfigError(f"recompute must be none, selective, full or every:K (K >= 1), got {r!r}")
        return int(m.group(1))

    def replace(self, **changes: object) -> ParallelConfig:
        """A copy with ``changes``; an overlap knob at its target's default follows a new target, pp or ZeRO stage."""
        grad, param = overlap_defaults(self.target, self.pp, self.zero_stage, self.overlap_grad_reduce)
        if "overlap_grad_reduce" not in changes and self.overlap_grad_reduce == grad:
            changes["overlap_grad_reduce"] = None
        if "overlap_param_gather" not in changes and self.overlap_param_gather == param:
            changes["overlap_param_gather"] = None
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def label(self) -> str:
        """A short human label, e.g. ``tp2 pp4 dp1 mbs2 m16 1f1b z1 full uniform``."""
        vpp = f" v{self.vpp}" if self.vpp > 1 else ""
        cp = f" cp{self.cp}" if self.cp > 1 else ""
        return (
            f"tp{self.tp}{cp} pp{self.pp} dp{self.dp} mbs{self.micro_batch_size} m{self.num_microbatches} "
            f"{self.schedule}{vpp} z{self.zero_stage} {self.recompute} {self.partition}"
        )

    @classmethod
    def from_global_batch(cls, *, global_batch_size: int, micro_batch_size: int, dp: int, **kw: object) -> ParallelConfig:
        """Derive num_microbatches from the DeepSpeed batch rule: global = micro * accumulation * dp."""
        if global_batch_size < 1:
            raise ConfigError(f"global batch size must be positive, got {global_batch_size}")
        per_step = micro_batch_size * dp
        if per_step < 1 or global_batch_size % per_step:
            raise ConfigError(
                f"global batch {global_batch_size} is not divisible by micro batch {micro_batch_size} * dp {dp} = {per_step}"
            )
        return cls(micro_batch_size=micro_batch_size, dp=dp, num_microbatches=global_batch_size // per_step, **kw)


def _check_partition(partition: str) -> None:
    if partition in PARTITION_NAMED:
        return
    if partition.startswith("type:"):
        try:
            re.compile(partition[5:], re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"partition {partition!r}: bad regular expression ({exc})") from None
        return
    raise ConfigError(f"partition must be uniform, parameters, balanced or type:<regex>, got {partition!r}")
