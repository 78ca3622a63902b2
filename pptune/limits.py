"""One bounded-size check for every model shape and job that pptune plans: refuse the absurd before any work.

The analytic path has no natural limit: a spec string or a flag can ask for 10^9 layers or a global batch of
10^11 sequences, and profile, estimate and plan would then run for minutes, exhaust memory or overflow numpy's
int64. These bounds sit far above anything trained today, so no real model or cluster is refused, and low
enough that the work pptune does per configuration stays bounded (seconds, not hours) and every byte count
stays well inside int64. Each bound cites the largest real figure it admits:

- layers <= 1,024: Llama 3 405B has 126 blocks, GPT-3 175B 96, DeepNet (Wang et al. 2022) trained 1,000.
  ``plan`` grows faster than linearly with the blocks (partitions over pp): 1,000 blocks plan in ~9 s here.
- hidden <= 262,144 (2^18): 16x Llama 3 405B's 16,384 (PaLM 540B: 18,432).
- ffn <= 1,048,576 (2^20): 20x Llama 3 405B's 53,248.
- heads, kv_heads <= 16,384 (2^14): 128x Llama 3 405B's 128 heads.
- vocab <= 16,777,216 (2^24): 64x Gemma's 256k.
- seq <= 16,777,216 (2^24): 128x Llama 3's 131,072 context, above the 10M of the longest-context models.
- micro-batch size <= 65,536 (2^16) sequences, and <= 2^32 tokens per micro-batch (2^32 * hidden * bytes
  stays inside int64 for every admitted hidden size).
- global batch <= 67,108,864 (2^26) sequences: 4x the ~2^24 sequences of the largest batches reported
  (and 2^24 tokens, GPT-3's 3.2M-token batch, is ~2^11 sequences).
- micro-batches per step (gradient accumulation) <= 65,536 (2^16): pipelines want m of a few times pp
  (pp <= a few hundred), and the pipeline simulation's time and memory grow with m (2^24 took 49 s and 10 GB).
- GPUs <= 2,097,152 (2^21): 10x the largest clusters (100k-200k GPUs); GPUs per node (one NVLink domain)
  <= 65,536 (2^16; NVL72 racks hold 72, NVL576 576).

Every violation raises :class:`pptune.errors.ConfigError` naming the field, its value and the bound, which the CLI
prints on one line with exit code 2.
"""

from __future__ import annotations

from pptune.errors import ConfigError

MAX_LAYERS = 1024
MAX_HIDDEN = 2**18
MAX_FFN = 2**20
MAX_HEADS = 2**14
MAX_VOCAB = 2**24
MAX_SEQ = 2**24
MAX_MICRO_BATCH = 2**16
MAX_TOKENS_PER_MICRO_BATCH = 2**32
MAX_GLOBAL_BATCH = 2**26
MAX_MICROBATCHES = 2**16
MAX_GPUS = 2**21
MAX_GPUS_PER_NODE = 2**16
# A profile lists the blocks plus embedding, head and the "other" layers a factory may cut a block into.
MAX_PROFILE_LAYERS = 4 * MAX_LAYERS + 2

_MODEL_BOUNDS = {
    "layers": MAX_LAYERS, "hidden": MAX_HIDDEN, "heads": MAX_HEADS, "kv_heads": MAX_HEADS, "ffn": MAX_FFN,
    "vocab": MAX_VOCAB, "seq": MAX_SEQ,
}


def _count(what: str, value: object, bound: int, prefix: str, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{prefix}{what} must be a positive integer, got {value!r}")
    if value > bound:
        raise ConfigError(f"{prefix}{what}={value:,} is above pptune's bound of {bound:,}{hint} "
                          "(see pptune/limits.py for why)")
    return value


def check_model(*, name: str, layers: int, hidden: int, heads: int, ffn: int | None = None,
                vocab: int | None = None, seq: int | None = None, kv_heads: int | None = None) -> None:
    """Refuse a model shape beyond the bounds above; ``name`` prefixes the message (``model 'X': ...``).

    Keys are the spec-string names (``layers=``, ``hidden=``...), so the message names what the user typed.
    None skips a field (a model that has none, e.g. no fixed sequence length).
    """
    values = {"layers": layers, "hidden": hidden, "heads": heads, "kv_heads": kv_heads, "ffn": ffn,
              "vocab": vocab, "seq": seq}
    for key, value in values.items():
        if value is not None:
            _count(key, value, _MODEL_BOUNDS[key], f"model {name!r}: ")


def check_micro_batch(micro_batch_size: int, *, seq_len: int | None = None, what: str = "micro-batch size") -> None:
    """Refuse a micro-batch beyond MAX_MICRO_BATCH sequences or MAX_TOKENS_PER_MICRO_BATCH tokens."""
    _count(what, micro_batch_size, MAX_MICRO_BATCH, "")
    if seq_len is not None and micro_batch_size * seq_len > MAX_TOKENS_PER_MICRO_BATCH:
        raise ConfigError(f"{what} {micro_batch_size:,} x sequence {seq_len:,} = {micro_batch_size * seq_len:,} tokens "
                          f"per micro-batch is above pptune's bound of {MAX_TOKENS_PER_MICRO_BATCH:,} "
                          "(see pptune/limits.py for why)")


def check_job(*, global_batch_size: int | None = None, gpus: int | None = None,
              micro_batch_size: int | None = None, max_micro_batch_size: int | None = None,
              num_microbatches: int | None = None, seq_len: int | None = None) -> None:
    """Refuse a job beyond the bounds above, before any search or estimate runs.

    Args:
        global_batch_size: sequences per optimizer step (``--global-batch-size``).
        gpus: GPUs of the job (``--gpus``, or the cluster's count).
        micro_batch_size: a fixed micro-batch size (``--micro-batch-size``), if any.
        max_micro_batch_size: the largest micro-batch size a search may pick (``--max-micro-batch-size``).
        num_microbatches: micro-batches per step of a fixed configuration (gradient accumulation), if known.
        seq_len: tokens per sequence, to bound the tokens of one micro-batch.

    Also refuses a job whose every configuration would need more than MAX_MICROBATCHES micro-batches per
    step: with ``gpus`` and the largest micro-batch size known, the fewest is ``global / (gpus * mbs)``.
    """
    if global_batch_size is not None:
        _count("global batch size", global_batch_size, MAX_GLOBAL_BATCH, "", " sequences")
    if gpus is not None:
        _count("GPU count", gpus, MAX_GPUS, "")
    for what, value in (("micro-batch size", micro_batch_size), ("max micro-batch size", max_micro_batch_size)):
        if value is not None:
            check_micro_batch(value, seq_len=seq_len, what=what)
    if num_microbatches is not None:
        _count("micro-batches per step", num_microbatches, MAX_MICROBATCHES, "",
               "; raise the micro-batch size or the data-parallel degree")
    largest = micro_batch_size if micro_batch_size is not None else max_micro_batch_size
    if global_batch_size is not None and gpus is not None and largest is not None:
        fewest = -(-global_batch_size // (gpus * largest))
        if fewest > MAX_MICROBATCHES:
            raise ConfigError(
                f"global batch size {global_batch_size:,} on {gpus:,} GPU(s) at micro-batch size <= {largest:,} needs "
                f"at least {fewest:,} micro-batches per step, above pptune's bound of {MAX_MICROBATCHES:,}; "
                "raise the micro-batch size or the GPU count (see pptune/limits.py for why)")


def check_cluster_size(*, gpus_per_node: int, num_nodes: int, origin: str = "cluster") -> None:
    """Refuse a cluster beyond MAX_GPUS_PER_NODE GPUs a node or MAX_GPUS GPUs in all."""
    _count("gpus_per_node", gpus_per_node, MAX_GPUS_PER_NODE, f"{origin}: ")
    _count("num_nodes", num_nodes, MAX_GPUS, f"{origin}: ")
    if gpus_per_node * num_nodes > MAX_GPUS:
        raise ConfigError(f"{origin}: {gpus_per_node:,} x {num_nodes:,} = {gpus_per_node * num_nodes:,} GPUs is above "
                          f"pptune's bound of {MAX_GPUS:,} (see pptune/limits.py for why)")
