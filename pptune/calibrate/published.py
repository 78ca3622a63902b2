"""Published Megatron measurements: load the CSV into frozen rows and turn a row into (spec, config, cluster).

The file is vTrain's ``data/ground_truth_single.csv`` (Bang et al., MICRO'24; see tests/data/README.md):
one row per run of a GPT model with the Megatron-DeepSpeed codebase on one node of up to 8 A100s, with the
columns ``# GPUs, global batch, micro batch, hidden size, attention heads, # layers, sequence length,
tensor parallelism, data parallelism, pipeline parallelism, iteration time (ms)`` (the first header cell
may start with a UTF-8 byte-order mark).

What a row does not say is fixed here, each choice from the codebase or its publishers' configuration:
fp16 mixed precision (Megatron-DeepSpeed's default), full activation recompute and the 1F1B schedule
(the publishers' configs), GPT-2's 50,257-token vocabulary padded to a multiple of ``128 * tp``
(Megatron's ``--make-vocab-size-divisible-by 128``), a 4h MLP, tied embeddings, unfused attention
(Megatron's fused scale-mask-softmax, no flash attention), DeepSpeed's pipeline engine with its
``type:transformer`` split (blocks evenly, embedding on the first stage, head on the last) and ZeRO 0.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from pptune.errors import SchemaError
from pptune.model.spec import TransformerSpec
from pptune.parallel import ParallelConfig

COLUMNS = ("# GPUs", "global batch", "micro batch", "hidden size", "attention heads", "# layers",
           "sequence length", "tensor parallelism", "data parallelism", "pipeline parallelism", "iteration time (ms)")
GPT2_VOCAB = 50257
VOCAB_MULTIPLE = 128  # Megatron's --make-vocab-size-divisible-by default
DTYPE = "fp16"
RECOMPUTE = "full"
PARTITION = "type:transformerblock"  # DeepSpeed's type: split over pptune's TransformerBlockPipe layers


@dataclass(frozen=True, kw_only=True, slots=True)
class PublishedRow:
    """One measured run (``index`` = its 0-based data row in the file)."""

    index: int
    gpus: int
    global_batch: int
    micro_batch: int
    hidden: int
    heads: int
    layers: int
    seq_len: int
    tp: int
    dp: int
    pp: int
    measured_ms: float

    @property
    def num_microbatches(self) -> int:
        return self.global_batch // (self.micro_batch * self.dp)

    def label(self) -> str:
        return (f"h{self.hidden} l{self.layers} tp{self.tp} pp{self.pp} dp{self.dp} "
                f"mbs{self.micro_batch} gbs{self.global_batch}")


def load_published(path: str | os.PathLike) -> tuple[PublishedRow, ...]:
    """Read and check the CSV; any problem raises SchemaError naming the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # drops the byte-order mark
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read ({exc.strerror})") from None
    reader = csv.reader(text.splitlines())
    header = [cell.strip() for cell in next(reader, [])]
    if tuple(header) != COLUMNS:
        raise SchemaError(f"{path}: header {header} is not the expected {list(COLUMNS)}")
    rows = []
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(COLUMNS):
            raise SchemaError(f"{path}: line {line}: {len(cells)} cells, expected {len(COLUMNS)}")
        rows.append(_row(path, line, len(rows), cells))
    if not rows:
        raise SchemaError(f"{path}: no data rows")
    return tuple(rows)


def _row(path: Path, line: int, index: int, cells: list[str]) -> PublishedRow:
    values: list[int] = []
    for name, cell in zip(COLUMNS[:-1], cells[:-1], strict=True):
        try:
            value = int(cell)
        except ValueError:
            raise SchemaError(f"{path}: line {line}: column '{name}': expected an integer, got {cell!r}") from None
        if value < 1:
            raise SchemaError(f"{path}: line {line}: column '{name}': must be positive, got {value}")
        values.append(value)
    try:
        ms = float(cells[-1])
    except ValueError:
        raise SchemaError(f"{path}: line {line}: column '{COLUMNS[-1]}': expected a number, got {cells[-1]!r}") from None
    if not math.isfinite(ms) or ms <= 0:
        raise SchemaError(f"{path}: line {line}: column '{COLUMNS[-1]}': must be positive, got {ms}")
    gpus, gbs, mbs, h, a, layers, s, tp, dp, pp = values
    if tp * dp * pp != gpus:
        raise SchemaError(f"{path}: line {line}: tp {tp} x dp {dp} x pp {pp} != {gpus} GPUs")
    if gbs % (mbs * dp):
        raise SchemaError(f"{path}: line {line}: global batch {gbs} is not divisible by micro batch {mbs} x dp {dp}")
    return PublishedRow(index=index, gpus=gpus, global_batch=gbs, micro_batch=mbs, hidden=h, heads=a, layers=layers,
                        seq_len=s, tp=tp, dp=dp, pp=pp, measured_ms=ms)


def padded_vocab(vocab: int, tp: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """Megatron's ``_vocab_size_with_padding``: the next multiple of ``multiple * tp``."""
    step = multiple * tp
    return -(-vocab // step) * step


def row_spec(row: PublishedRow, *, vocab: int = GPT2_VOCAB) -> TransformerSpec:
    """The GPT of a row (vocabulary padded as Megatron pads it at this tp)."""
    return TransformerSpec(name=f"gpt-h{row.hidden}-l{row.layers}", num_layers=row.layers, hidden_size=row.hidden,
                           num_heads=row.heads, ffn_hidden_size=4 * row.hidden,
                           vocab_size=padded_vocab(vocab, row.tp), seq_len=row.seq_len)


def row_config(row: PublishedRow) -> ParallelConfig:
    """The parallel configuration of a row (see the module docstring for what is assumed)."""
    return ParallelConfig(tp=row.tp, pp=row.pp, dp=row.dp, micro_batch_size=row.micro_batch,
                          num_microbatches=row.num_microbatches, schedule="1f1b", recompute=RECOMPUTE, dtype=DTYPE,
                          partition=PARTITION if row.pp > 1 else "uniform", target="deepspeed")
