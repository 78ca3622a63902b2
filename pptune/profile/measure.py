"""The profiler: measure every pipeline layer of a model at several micro-batch sizes and return a Profile.

Layers run one at a time, in pipeline order: layer 0 gets random token ids ``[mbs, seq_len]``,
each later layer gets the previous layer's output (so shapes and dtypes are the real ones), and
the last layer also runs the model's loss with labels = inputs. Then the whole list runs as one chain
(``pptune.profile.chain``), and each size's timings are scaled by how much slower it ran than the sum of its
layers alone (``Profile.in_sequence`` keeps the factors). Identical layers (same class,
same parameter shapes and dtypes, same input shape: all the transformer blocks) are measured once;
the others record ``shares_measurement_with`` and carry the same timings.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from pptune.errors import ConfigError
from pptune.fileio import cpu_name
from pptune.model.resolve import ModelLayers, load_model_layers
from pptune.profile.chain import chain_scale
from pptune.profile.measure_layer import measure_layer
from pptune.profile.scale import scaled_timing
from pptune.profile.schema import InSequence, LayerProfile, LayerTiming, Profile
from pptune.profile.timing import make_timer

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICES = ("cpu", "cuda")
MIN_WARMUP = 5  # docs/REFERENCE.md §2: per-layer times settle after 5 warm-ups; the first backward is 3-8x slow
DATA_SEED = 1234
HEAD_LOSS_NOTE = "the last layer's timings and saved bytes include the loss (cross-entropy in fp32), as the last stage runs it"


def profile_model(
    model: str | ModelLayers,
    *,
    seq_len: int,
    micro_batch_sizes: Sequence[int],
    device: str = "cpu",
    dtype: str = "fp32",
    threads: int | None = None,
    warmup: int = MIN_WARMUP,
    repeat: int = 10,
    command: str | None = None,
    progress: bool = True,
    tp: int = 1,
) -> Profile:
    """Measure forward/backward time and memory of each pipeline layer of ``model``.

    Args:
        model: a MODEL string (see ``pptune.model.resolve``) or layers already built (they are
            moved to ``device`` and ``dtype`` in place).
        seq_len: tokens per sample.
        micro_batch_sizes: the micro-batch sizes to measure (each >= 1).
        device: ``"cpu"`` or ``"cuda"`` (the current CUDA device).
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"``: parameters and activations.
        threads: CPU threads torch may use while measuring (``torch.set_num_threads``); None keeps
            torch's current setting. Restored afterwards. Recorded either way.
        warmup: untimed iterations per layer and size (at least 5).
        repeat: timed iterations per layer and size; the profile keeps the median and max - min.
        command: the command line to record in the profile.
        progress: show a progress bar on stderr (only when stderr is a terminal).
        tp: profile what one rank of a tensor-parallel group of this size computes (``pptune.profile.tp_shard``:
            pptune's tp layers, collectives left out); a preset or spec model only, or layers already built as
            that rank (``tp_model_layers``). The profile records ``tp``.

    Raises:
        ConfigError: unknown device or dtype, CUDA without a GPU, no micro-batch sizes, bad counts,
            a sequence longer than a learned-position table, or running out of memory.
    """
    sizes = _check_arguments(seq_len, micro_batch_sizes, device, dtype, threads, warmup, repeat)
    if tp < 1:
        raise ConfigError(f"tp must be >= 1, got tp {tp}")
    if tp > 1 and not isinstance(model, ModelLayers):
        from pptune.profile.tp_shard import tp_model_layers

        layers = tp_model_layers(model, tp, seq_len)
    else:
        layers = model if isinstance(model, ModelLayers) else load_model_layers(model, seq_len)
    spec = layers.spec
    if spec is not None and spec.position == "learned" and seq_len > spec.seq_len:
        raise ConfigError(f"model {layers.name!r}: seq_len {seq_len} is longer than its {spec.seq_len} learned positions")
    dev = torch.device(device)
    load_before = _load_average()
    with _threads(threads):
        stack = nn.ModuleList(layers.layers).to(device=dev, dtype=DTYPES[dtype])  # one call keeps tied weights shared
        stack.train()
        try:
            profiles, in_sequence = _measure_all(layers, dev, seq_len, sizes, warmup, repeat, progress)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if not isinstance(exc, torch.OutOfMemoryError) and "can't allocate memory" not in first_line:
                raise  # not a memory problem: an internal error keeps its traceback
            raise ConfigError(f"out of memory on {device} profiling {layers.name!r} at seq_len {seq_len}, "
                              f"micro-batch sizes {list(sizes)}: {first_line}") from None
        num_threads = torch.get_num_threads()
    return Profile(
        model=layers.name, source="measured", device=dev.type, device_name=device_name(dev), dtype=dtype,  # type: ignore[arg-type]
        seq_len=seq_len, micro_batch_sizes=sizes, layers=tuple(profiles), tp=tp, threads=num_threads,
        torch_version=torch.__version__, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command, spec=spec.to_dict() if spec is not None else None,
        notes=_notes(layers, dev, load_before), in_sequence=in_sequence,
    )


def _notes(model: ModelLayers, dev: torch.device, load_before: float | None) -> str | None:
    notes = [HEAD_LOSS_NOTE] if model.loss_fn is not None else []
    load_after = _load_average()
    if dev.type == "cpu" and load_before is not None and load_after is not None:
        # Other processes on the host slow CPU timings down; the load average tells a reader how quiet it was.
        notes.append(f"host 1-minute load average {load_before:.2f} at start, {load_after:.2f} at end")
    return "; ".join(notes) or None


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _check_arguments(
    seq_len: int, micro_batch_sizes: Sequence[int], device: str, dtype: str, threads: int | None, warmup: int, repeat: int
) -> tuple[int, ...]:
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA GPU (torch.cuda.is_available() is False)")
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    for name, value, least in (("seq_len", seq_len, 1), ("warmup", warmup, MIN_WARMUP), ("repeat", repeat, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    sizes = tuple(sorted(set(micro_batch_sizes)))
    if not sizes:
        raise ConfigError("micro_batch_sizes is empty; give at least one, e.g. 1,2,4,8")
    if any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in sizes):
        raise ConfigError(f"micro-batch sizes must be positive integers, got {list(micro_batch_sizes)}")
    return sizes


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _identity(layer: nn.Module) -> tuple:
    """What makes two layers interchangeable for timing: class, and every parameter's name, shape and dtype."""
    params = tuple((name, tuple(p.shape), p.dtype) for name, p in layer.named_parameters())
    return (type(layer), params)


def _measure_all(
    model: ModelLayers, dev: torch.device, seq_len: int, sizes: tuple[int, ...], warmup: int, repeat: int, progress: bool
) -> tuple[list[LayerProfile], tuple[InSequence, ...]]:
    """Each layer alone (``measure_layer``), then the whole chain per size, whose factors scale every timing."""
    layers, last = model.layers, len(model.layers) - 1
    identities = [_identity(layer) for layer in layers]
    timings: list[list[LayerTiming]] = [[] for _ in layers]
    in_sequence: list[InSequence] = []
    shared_with: list[set[int | None]] = [set() for _ in layers]
    timer = make_timer(dev)
    generator = torch.Generator().manual_seed(DATA_SEED)
    bar = _progress_bar(len(set(identities)) * len(sizes), progress)
    try:
        for mbs in sizes:
            tokens = torch.randint(0, model.vocab_size, (mbs, seq_len), generator=generator).to(dev)
            x: torch.Tensor | None = tokens
            done: dict[tuple, tuple[int, torch.Tensor | None]] = {}  # identity + input shape -> (index, output)
            for i, layer in enumerate(layers):
                assert x is not None, "only the last layer's output is dropped"
                loss = model.loss_fn if i == last else None
                key = (identities[i], tuple(x.shape), x.dtype, loss is not None)
                if key in done:  # an identical layer already ran on an input of this shape
                    j, x = done[key]
                    timings[i].append(timings[j][-1])
                    shared_with[i].add(j)
                    continue
                bar.set_postfix_str(f"{_layer_name(model.roles, i)} mbs={mbs}")
                measured = measure_layer(
                    layer, x, micro_batch_size=mbs, timer=timer, warmup=warmup, repeat=repeat,
                    loss_fn=loss, labels=tokens if loss is not None else None, keep_output=i != last,
                )
                timings[i].append(measured.timing)
                shared_with[i].add(None)
                done[key] = (i, measured.output)
                x = measured.output
                bar.update()
            at = [t[-1] for t in timings]
            factors = chain_scale(layers, tokens, loss_fn=model.loss_fn, timer=timer, micro_batch_size=mbs,
                                  fwd_sum_ms=sum(t.fwd_ms for t in at), bwd_sum_ms=sum(t.bwd_ms for t in at))
            for t in timings:
                t[-1] = scaled_timing(t[-1], factors.fwd_scale, factors.bwd_scale)
            in_sequence.append(factors)
    finally:
        bar.close()
    return _layer_profiles(model, timings, shared_with), tuple(in_sequence)


def _layer_profiles(model: ModelLayers, timings: list[list[LayerTiming]], shared_with: list[set[int | None]]) -> list[LayerProfile]:
    seen: set[int] = set()  # parameters already counted: a tied weight counts once, on the first layer holding it
    profiles = []
    for i, layer in enumerate(model.layers):
        own = [p for p in layer.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in own)
        # One source for every micro-batch size, or the layer was measured at some: then it is its own.
        shares = next(iter(shared_with[i])) if len(shared_with[i]) == 1 else None
        profiles.append(LayerProfile(
            index=i, name=_layer_name(model.roles, i), kind=type(layer).__name__, role=model.roles[i],  # type: ignore[arg-type]
            param_count=sum(p.numel() for p in own), param_bytes=sum(p.numel() * p.element_size() for p in own),
            timings=tuple(timings[i]), shares_measurement_with=shares,
        ))
    return profiles


def _layer_name(roles: list[str], index: int) -> str:
    role = roles[index]
    if role in ("embedding", "head"):
        return role
    return f"{role}.{roles[:index].count(role)}"


def _progress_bar(total: int, progress: bool):  # -> tqdm
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, unit="layer", desc="profile", leave=False,
                disable=not progress or not sys.stderr.isatty())


def device_name(dev: torch.device) -> str:
    """The GPU's name, or the CPU model (``pptune.fileio.cpu_name``)."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return cpu_name()

