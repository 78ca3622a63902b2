"""Read a measured run out of a Megatron-LM, Megatron-DeepSpeed or DeepSpeed training log.

What is read, and where each line comes from (every pattern below was checked against that file):

- Megatron-LM ``megatron/training/training.py`` (NVIDIA/Megatron-LM d98e8a64ddf34856e74b24714e3bedb2f5a39553,
  ``training_log``) and Megatron-DeepSpeed ``megatron/training.py`` (microsoft/Megatron-DeepSpeed
  f4157bea69f3df8c6cb66f2ebcda66ba03d1288e, ``training_log``): ``elapsed time per iteration (ms): 1234.5 |``, one
  per ``--log-interval`` (the mean over the interval). BigScience's Megatron-DeepSpeed fork printed
  ``elapsed time per iteration (s): 105.22`` (bigscience-workshop/bigscience ``train/tr11-176B-ml/chronicles.md``);
  both are read.
- Their arguments block, ``_print_args`` in ``megatron/training/arguments.py`` (Megatron-LM, same commit) and
  ``megatron/arguments.py`` (Megatron-DeepSpeed, same commit): ``------------------------ arguments
  ------------------------``, then one ``  name ....... value`` line per argument, then ``-------------------- end
  of arguments ---------------------``. From it come tp, pp, dp, micro and global batch, the model shape,
  precision, recompute, sequence parallelism, interleaving and (Megatron-DeepSpeed: ``deepspeed True``) the target.
- Megatron's ``report_memory`` (``megatron/training/utils/common_utils.py`` / ``megatron/utils.py``, same
  commits): ``... memory (MB) | allocated: .. | max allocated: 1234.5 | ...`` (MiB).
- DeepSpeed (deepspeedai/DeepSpeed edaa7221267243c7be7fb49c5d5f5c4fb97b4641): the pipeline engine's
  ``steps: 10 loss: 2.3 iter time (s): 0.567 samples/sec: 12.3`` (``deepspeed/runtime/pipe/engine.py``,
  ``train_batch``); the engine's ``ThroughputTimer`` (``deepspeed/utils/timer.py``, built in
  ``deepspeed/runtime/engine.py`` with ``batch_size=train_batch_size()``): ``epoch=0/micro_step=8/global_step=8,
  RunningAvgSamplesPerSec=.., CurrSamplesPerSec=12.3, MemAllocated=1.2GB, MaxMemAllocated=3.4GB``, whose
  ``CurrSamplesPerSec`` is the global batch over the step time; the FLOPS profiler's ``iter latency: 184.73 ms``
  (``deepspeed/profiling/flops_profiler/profiler.py``, ``print_model_profile``; fwd + bwd + step of the profiled
  step); ``see_memory_usage`` (``deepspeed/runtime/utils.py``): ``MA 1.2 GB  Max_MA 3.4 GB  CA .. GB  Max_CA .. GB``
  (GiB: it divides by 1024**3).

The step time is the median of the per-iteration figures of the first kind found (in the order above), without
the first one when there are three or more (it includes warm-up); the peak memory is the largest figure printed.
"""

from __future__ import annotations

import ast
import os
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from pptune.batch_lines import BATCH_KEYS
from pptune.errors import SchemaError

_NUMBER = r"([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"
_MEGATRON_MS = re.compile(r"elapsed time per iteration \(ms\):\s*" + _NUMBER)
_MEGATRON_S = re.compile(r"elapsed time per iteration \(s\):\s*" + _NUMBER)
_DS_PIPE_S = re.compile(r"iter time \(s\):\s*" + _NUMBER)
_DS_TPUT = re.compile(r"CurrSamplesPerSec=" + _NUMBER)
_DS_FLOPS = re.compile(r"iter latency:\s*" + _NUMBER + r"\s*(s|ms|us|ks)\b")
_PEAK_GIB = (re.compile(r"Max_MA\s+" + _NUMBER + r"\s*GB"), re.compile(r"MaxMemAllocated=" + _NUMBER + r"\s*GB"))
_PEAK_MIB = re.compile(r"max allocated:\s*" + _NUMBER)
_ARGS_START = re.compile(r"-{8,} arguments -{8,}")
_ARGS_END = re.compile(r"-{8,} end of arguments -{8,}")
_ARG_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*) \.* ?(\S.*?)\s*$")
_UNIT_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "ks": 1e6}


@dataclass(frozen=True, kw_only=True, slots=True)
class LogRun:
    """What one log says: its step time, where it came from, the peak memory and the logged arguments."""

    step_ms: float
    source: str  # which kind of line gave the step time
    iterations: int  # how many figures the median is over
    peak_memory_gib: float | None
    arguments: dict[str, Any] = field(default_factory=dict)


def _arguments(lines: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    inside = False
    for line in lines:
        if not inside:
            inside = bool(_ARGS_START.search(line))
            continue
        if _ARGS_END.search(line):
            break
        m = _ARG_LINE.search(line)
        if m:
            out[m.group(1)] = _value(m.group(2))
    return out


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)  # numbers, True/False/None, lists, quoted strings
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text  # an enum (AttnBackend.auto) or a bare word


def parse_log(text: str, *, origin: str, global_batch_size: int | None = None) -> LogRun:
    """The run a training log records (module docstring).

    Args:
        text: the log.
        origin: its name for messages.
        global_batch_size: needed only to turn DeepSpeed's ``CurrSamplesPerSec`` into a time (default: the
            logged ``global_batch_size`` argument).

    Raises:
        SchemaError: no per-iteration time in the log.
    """
    lines = text.splitlines()
    arguments = _arguments(lines)
    gbs = global_batch_size or arguments.get("global_batch_size")
    kinds: list[tuple[str, list[float]]] = [
        ("Megatron 'elapsed time per iteration (ms)'", [float(m.group(1)) for m in _MEGATRON_MS.finditer(text)]),
        ("Megatron 'elapsed time per iteration (s)'", [float(m.group(1)) * 1e3 for m in _MEGATRON_S.finditer(text)]),
        ("DeepSpeed pipeline 'iter time (s)'", [float(m.group(1)) * 1e3 for m in _DS_PIPE_S.finditer(text)]),
    ]
    rates = [float(m.group(1)) for m in _DS_TPUT.finditer(text)]
    if rates and isinstance(gbs, int) and gbs > 0:
        kinds.append(("DeepSpeed ThroughputTimer 'CurrSamplesPerSec'", [gbs / r * 1e3 for r in rates if r > 0]))
    kinds.append(("DeepSpeed FLOPS profiler 'iter latency'",
                  [float(m.group(1)) * _UNIT_MS[m.group(2)] for m in _DS_FLOPS.finditer(text)]))
    found = next(((name, [v for v in values if v > 0]) for name, values in kinds if any(v > 0 for v in values)), None)
    if found is None:
        hint = (" (DeepSpeed's CurrSamplesPerSec needs the global batch size: give --global-batch-size)"
                if rates and not gbs else "")
        raise SchemaError(f"{origin}: no per-iteration time found (Megatron 'elapsed time per iteration', DeepSpeed "
                          f"'iter time (s)', 'CurrSamplesPerSec' or 'iter latency'){hint}")
    name, values = found
    steady = values[1:] if len(values) >= 3 else values
    peaks = [float(m.group(1)) for pattern in _PEAK_GIB for m in pattern.finditer(text)]
    peaks += [float(m.group(1)) / 1024 for m in _PEAK_MIB.finditer(text)]
    return LogRun(step_ms=statistics.median(steady), source=name, iterations=len(steady),
                  peak_memory_gib=max(peaks) if peaks and max(peaks) > 0 else None, arguments=arguments)


def read_log(path: str | os.PathLike, *, global_batch_size: int | None = None) -> LogRun:
    """``parse_log`` of a file (SchemaError naming it when unreadable)."""
    from pptune.calibrate.runs_file import read_text

    return parse_log(read_text(path), origin=str(path), global_batch_size=global_batch_size)


def configuration(arguments: dict[str, Any]) -> dict[str, Any]:
    """The batch-line keys Megatron's logged arguments state (only those it states).

    Megatron prints ``padded_vocab_size`` as None (the tokenizer sets it after the block), so the vocabulary is
    ``vocab_size`` when logged and the spec default otherwise; pass ``--model`` to state it.
    """
    a = arguments
    out: dict[str, Any] = {}
    for key, name in (("tp", "tensor_model_parallel_size"), ("pp", "pipeline_model_parallel_size"),
                      ("dp", "data_parallel_size"), ("micro_batch_size", "micro_batch_size"),
                      ("global_batch_size", "global_batch_size")):
        if isinstance(a.get(name), int) and not isinstance(a.get(name), bool):
            out[key] = a[name]
    if "dp" not in out and isinstance(a.get("world_size"), int) and "tp" in out and "pp" in out:
        out["dp"] = a["world_size"] // (out["tp"] * out["pp"])
    layers, hidden, heads = a.get("num_layers"), a.get("hidden_size"), a.get("num_attention_heads")
    if all(isinstance(v, int) and v > 0 for v in (layers, hidden, heads)):
        spec = f"gpt:layers={layers},hidden={hidden},heads={heads}"
        for key, name in (("ffn", "ffn_hidden_size"), ("seq", "seq_length"), ("vocab", "padded_vocab_size"),
                          ("kv_heads", "num_query_groups")):
            if isinstance(a.get(name), int) and a[name] > 0 and (key != "kv_heads" or a.get("group_query_attention")):
                spec += f",{key}={a[name]}"
        if "vocab=" not in spec and isinstance(a.get("vocab_size"), int) and a["vocab_size"] > 0:
            spec += f",vocab={a['vocab_size']}"
        out["model"] = spec
    if a.get("bf16") is True:
        out["dtype"] = "bf16"
    elif a.get("fp16") is True:
        out["dtype"] = "fp16"
    elif a.get("bf16") is False and a.get("fp16") is False:
        out["dtype"] = "fp32"
    granularity = a.get("recompute_granularity")
    if granularity in ("full", "selective"):
        out["recompute"] = granularity
    elif a.get("checkpoint_activations") is True:  # Megatron-DeepSpeed's older flag
        out["recompute"] = "full"
    elif "recompute_granularity" in a or "checkpoint_activations" in a:
        out["recompute"] = "none"
    if isinstance(a.get("sequence_parallel"), bool):
        out["sequence_parallel"] = a["sequence_parallel"]
    vpp = a.get("virtual_pipeline_model_parallel_size")
    per_stage = a.get("num_layers_per_virtual_pipeline_stage")
    if not isinstance(vpp, int) and isinstance(per_stage, int) and per_stage > 0 and isinstance(layers, int) \
            and out.get("pp"):
        vpp = layers // (out["pp"] * per_stage)
    if isinstance(vpp, int) and vpp > 1:
        out["vpp"], out["schedule"] = vpp, "interleaved_1f1b"
    if a.get("deepspeed") is True:
        out["target"] = "deepspeed"
        if isinstance(a.get("zero_stage"), int) and a["zero_stage"] in (0, 1, 2, 3):
            out["zero"] = a["zero_stage"]
    elif "tensor_model_parallel_size" in a:
        out["target"] = "megatron"
    out.update(_knobs(a))
    return out


_FLASH_FLAGS = ("use_flash_attn", "use_flash_attn_v1", "use_flash_attn_v2", "use_flash_attn_triton")


def _knobs(a: dict[str, Any]) -> dict[str, Any]:
    """The attention kernel and gradient-reduce overlap, for the batch keys that take them.

    Megatron-LM's ``--attention-backend`` (``AttnBackend.flash``/``fused`` run a fused flash-style kernel,
    ``unfused``/``local`` Megatron's own softmax); older Megatron and Megatron-DeepSpeed have ``--use-flash-attn``
    (``_v1``/``_v2``/``_triton``), without which attention is unfused.
    """
    out: dict[str, Any] = {}
    if "attention" in BATCH_KEYS:
        backend = str(a.get("attention_backend", "")).lower()
        if any(a.get(k) is True for k in _FLASH_FLAGS) or "flash" in backend or backend.endswith("fused") \
                and not backend.endswith("unfused"):
            out["attention"] = "flash"
        elif "unfused" in backend or backend.endswith("local") or (
                any(k in a for k in _FLASH_FLAGS) and not backend):
            out["attention"] = "unfused"
    if "overlap_grad_reduce" in BATCH_KEYS and isinstance(a.get("overlap_grad_reduce"), bool):
        out["overlap_grad_reduce"] = a["overlap_grad_reduce"]
    return out
