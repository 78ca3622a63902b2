"""Profile and LayerProfile: per-layer costs of a model, measured or analytic, and their JSON form.

The schema (``schema_version`` 2) is documented in README.md, "Profile format". Loading validates
every field once; a bad file raises SchemaError naming the file and the field. Version 2 adds each timing's
backward split (``bwd_input_ms`` and ``bwd_weight_ms``, the input- and weight-gradient parts of ``bwd_ms``
that zero-bubble schedules run apart); version 1 files, which have no split, are still read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pptune.errors import ConfigError, SchemaError
from pptune.fileio import write_json_atomic
from pptune.limits import MAX_GPUS, MAX_MICRO_BATCH, MAX_PROFILE_LAYERS, MAX_SEQ
from pptune.model.spec import TransformerSpec
from pptune.profile.fields import FieldReader

SCHEMA_VERSION = 2
READ_VERSIONS = (1, 2)  # what load_profile reads; version 1 has no backward split

# Bounds on every number of a profile, far beyond any real device, so that a file of huge finite numbers
# (bwd_ms 1e308) is refused here rather than turning into inf/NaN step times deep in the cost model:
# - one layer's pass at one micro-batch size takes < 1e7 ms (2.8 hours; a real layer takes micro- to
#   milliseconds on a GPU, seconds on a CPU);
# - bytes (saved, output, peak, parameters) < 2**50 (1 PiB: 1,000x the memory of any GPU node or host);
# - parameters of one layer < 2**50 (a Llama 3 405B block holds 3.2e9);
# - forward FLOPs of one layer < 1e22 (what a 1e6 TFLOP/s device, 400x a B200, does in 1e7 ms).
MAX_LAYER_MS = 1e7
MAX_BYTES = 2**50
MAX_PARAMS = 2**50
MAX_LAYER_FLOPS = 1e22
MAX_THREADS = 2**20
MAX_MICRO_BATCH_SIZES = 1024  # sizes listed in one profile
MAX_SCALE = 100.0  # an in-sequence factor: a chain 100x slower than its layers alone is a broken measurement
TIMING_BOUNDS: dict[str, float] = {
    "fwd_ms": MAX_LAYER_MS, "bwd_ms": MAX_LAYER_MS, "fwd_spread_ms": MAX_LAYER_MS, "bwd_spread_ms": MAX_LAYER_MS,
    "attn_fwd_ms": MAX_LAYER_MS, "bwd_input_ms": MAX_LAYER_MS, "bwd_weight_ms": MAX_LAYER_MS, "saved_bytes": MAX_BYTES, "output_bytes": MAX_BYTES,
    "peak_allocated_bytes": MAX_BYTES, "fwd_flops": MAX_LAYER_FLOPS,
}
Role = Literal["embedding", "block", "head", "other"]
Source = Literal["measured", "analytic"]
ROLES = ("embedding", "block", "head", "other")


@dataclass(frozen=True, kw_only=True, slots=True)
class LayerTiming:
    """Costs of one layer at one micro-batch size."""

    micro_batch_size: int
    fwd_ms: float  # median over repeats
    bwd_ms: float  # median over repeats (input and weight gradients together)
    fwd_spread_ms: float = 0.0  # max - min over repeats (0 for analytic)
    bwd_spread_ms: float = 0.0
    saved_bytes: int  # bytes autograd saves for backward (no recompute), storages de-duplicated
    output_bytes: int  # the activation this layer hands to the next one (a pipeline p2p message)
    fwd_flops: float = 0.0  # model FLOPs of the forward pass (0 when unknown)
    attn_fwd_ms: float = 0.0  # share of fwd_ms in the attention core (what selective recompute re-runs); 0 = unknown
    peak_allocated_bytes: int | None = None  # CUDA only: peak allocated during fwd+bwd above the baseline
    # The backward split (schema 2): the input-gradient part B and the weight-gradient part W of bwd_ms
    # (B + W = bwd_ms); None in profiles made without it (the cost model then assumes W = half of bwd_ms).
    bwd_input_ms: float | None = None
    bwd_weight_ms: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class InSequence:
    """How much slower the layers ran as one chain than one at a time, at one micro-batch size
    (``pptune.profile.chain``): every layer timing of a measured profile at that size is already multiplied by it."""

    micro_batch_size: int
    fwd_scale: float  # whole-chain forward median / sum of the layers' forward medians
    bwd_scale: float


@dataclass(frozen=True, kw_only=True, slots=True)
class LayerProfile:
    """One pipeline layer (an entry of the PipelineModule's layer list)."""

    index: int
    name: str  # e.g. "embedding", "block.3", "head"
    kind: str  # class name; DeepSpeed's partition_method="type:<regex>" matches it
    role: Role
    param_count: int  # trainable parameters (tied weights counted once, on the first layer that owns them)
    param_bytes: int  # bytes of those parameters in the profiled dtype
    timings: tuple[LayerTiming, ...]  # one per micro-batch size, ascending
    shares_measurement_with: int | None = None  # index of the identical layer whose timings these are

    def timing(self, micro_batch_size: int) -> LayerTiming:
        """The timing at a micro-batch size: exact when profiled, else linear in micro-batch size.

        Time and bytes grow linearly with the micro-batch size (docs/REFERENCE.md §2, seen here): between
        two profiled sizes we interpolate, beyond them we scale the nearest one per sample.
        """
        for t in self.timings:
            if t.micro_batch_size == micro_batch_size:
                return t
        ts = self.timings
        lo = max((t for t in ts if t.micro_batch_size < micro_batch_size), key=lambda t: t.micro_batch_size, default=None)
        hi = min((t for t in ts if t.micro_batch_size > micro_batch_size), key=lambda t: t.micro_batch_size, default=None)
        if lo is not None and hi is not None:
            w = (micro_batch_size - lo.micro_batch_size) / (hi.micro_batch_size - lo.micro_batch_size)
            return _mix(lo, hi, w, micro_batch_size)
        near = lo if lo is not None else hi
        assert near is not None
        return _scale(near, micro_batch_size / near.micro_batch_size, micro_batch_size)


def _mix(a: LayerTiming, b: LayerTiming, w: float, mbs: int) -> LayerTiming:
    def f(x: float, y: float) -> float:
        return x + (y - x) * w

    return LayerTiming(
        micro_batch_size=mbs, fwd_ms=f(a.fwd_ms, b.fwd_ms), bwd_ms=f(a.bwd_ms, b.bwd_ms),
        fwd_spread_ms=f(a.fwd_spread_ms, b.fwd_spread_ms), bwd_spread_ms=f(a.bwd_spread_ms, b.bwd_spread_ms),
        saved_bytes=round(f(a.saved_bytes, b.saved_bytes)), output_bytes=round(f(a.output_bytes, b.output_bytes)),
        fwd_flops=f(a.fwd_flops, b.fwd_flops), attn_fwd_ms=f(a.attn_fwd_ms, b.attn_fwd_ms),
        peak_allocated_bytes=None if a.peak_allocated_bytes is None or b.peak_allocated_bytes is None
        else round(f(a.peak_allocated_bytes, b.peak_allocated_bytes)),
        **_split(a, b, f),
    )


def _split(a: LayerTiming, b: LayerTiming, f: Any) -> dict[str, float | None]:
    """The backward split of a timing mixed (or scaled) from ``a`` and ``b`` by ``f``; None unless both have one."""
    if a.bwd_weight_ms is None or b.bwd_weight_ms is None or a.bwd_input_ms is None or b.bwd_input_ms is None:
        return {"bwd_input_ms": None, "bwd_weight_ms": None}
    return {"bwd_input_ms": f(a.bwd_input_ms, b.bwd_input_ms), "bwd_weight_ms": f(a.bwd_weight_ms, b.bwd_weight_ms)}


def _scale(a: LayerTiming, k: float, mbs: int) -> LayerTiming:
    return LayerTiming(
        micro_batch_size=mbs, fwd_ms=a.fwd_ms * k, bwd_ms=a.bwd_ms * k, fwd_spread_ms=a.fwd_spread_ms * k,
        bwd_spread_ms=a.bwd_spread_ms * k, saved_bytes=round(a.saved_bytes * k), output_bytes=round(a.output_bytes * k),
        fwd_flops=a.fwd_flops * k, attn_fwd_ms=a.attn_fwd_ms * k,
        peak_allocated_bytes=None if a.peak_allocated_bytes is None else round(a.peak_allocated_bytes * k),
        **_split(a, a, lambda x, _: x * k),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    """Per-layer costs of one model on one device, in pipeline order."""

    schema_version: int = SCHEMA_VERSION
    model: str  # preset name, spec string, HF config name or user factory
    source: Source
    device: str  # "cpu", "cuda" or, for analytic profiles, the GPU preset name
    device_name: str  # e.g. the CPU model or "NVIDIA H100 80GB HBM3"
    dtype: Literal["fp32", "bf16", "fp16"]
    seq_len: int
    micro_batch_sizes: tuple[int, ...]
    layers: tuple[LayerProfile, ...]
    tp: int = 1  # tensor-parallel degree the layer shapes were sharded by (1 for measured profiles)
    threads: int | None = None  # CPU threads torch used while measuring
    torch_version: str | None = None
    date: str | None = None  # ISO 8601
    command: str | None = None  # the exact command that made the file
    spec: dict | None = None  # TransformerSpec.to_dict() when the model came from a spec
    notes: str | None = None
    in_sequence: tuple[InSequence, ...] = ()  # measured profiles since 2026-12: the factors their timings include

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def param_count(self) -> int:
        return sum(layer.param_count for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "<profile>") -> Profile:
        return _parse_profile(data, origin)


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


def save_profile(profile: Profile, path: str | os.PathLike) -> Path:
    """Write atomically (temporary file, then rename) so a killed run leaves no half file."""
    return write_json_atomic(path, profile.to_dict())


def load_profile(path: str | os.PathLike) -> Profile:
    """Load and validate a profile file; any problem raises SchemaError naming the file and field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read profile ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return _parse_profile(data, str(path))


# --- validation (typed field reads: pptune.profile.fields) -------------------------------------

def _parse_profile(data: Any, origin: str) -> Profile:
    r = FieldReader(data, origin, "")
    version = r.get("schema_version", int)
    if version not in READ_VERSIONS:
        raise r.fail("schema_version", f"unknown version {version} (this pptune reads "
                                       f"{', '.join(map(str, READ_VERSIONS))})")
    mbs_list = r.get("micro_batch_sizes", list)
    if not mbs_list or not all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in mbs_list):
        raise r.fail("micro_batch_sizes", f"must be a non-empty list of positive integers, got {mbs_list!r}")
    if len(mbs_list) > MAX_MICRO_BATCH_SIZES or max(mbs_list) > MAX_MICRO_BATCH:
        raise r.fail("micro_batch_sizes", f"at most {MAX_MICRO_BATCH_SIZES} sizes of at most {MAX_MICRO_BATCH:,} each "
                                          "(see pptune/limits.py)")
    if len(set(mbs_list)) != len(mbs_list):
        raise r.fail("micro_batch_sizes", f"lists a size twice: {mbs_list!r}")
    layers_raw = r.get("layers", list)
    if not layers_raw:
        raise r.fail("layers", "must list at least one layer")
    if len(layers_raw) > MAX_PROFILE_LAYERS:
        raise r.fail("layers", f"lists {len(layers_raw):,} layers, above pptune's bound of {MAX_PROFILE_LAYERS:,} "
                               "(see pptune/limits.py)")
    layers = tuple(_parse_layer(r.child("layers", i), i, len(layers_raw), version) for i in range(len(layers_raw)))
    for layer in layers:
        got = [t.micro_batch_size for t in layer.timings]
        if sorted(got) != sorted(mbs_list):
            raise r.fail(f"layers[{layer.index}].timings", f"micro-batch sizes {got} differ from micro_batch_sizes {mbs_list}")
    spec = r.get("spec", dict, required=False)
    if spec is not None:  # the cost model reads sizes from it: a bad spec must fail here, not deep in a plan
        try:
            TransformerSpec.from_dict(spec)
        except (ConfigError, TypeError) as exc:
            raise r.fail("spec", str(exc)) from None
    return Profile(
        schema_version=version,
        model=r.get("model", str),
        source=r.choice("source", ("measured", "analytic")),
        device=r.get("device", str),
        device_name=r.get("device_name", str),
        dtype=r.choice("dtype", ("fp32", "bf16", "fp16")),
        seq_len=r.integer("seq_len", positive=True, maximum=MAX_SEQ),
        micro_batch_sizes=tuple(sorted(mbs_list)),
        layers=layers,
        tp=r.integer("tp", required=False, default=1, positive=True, maximum=MAX_GPUS),
        threads=r.integer("threads", required=False, positive=True, maximum=MAX_THREADS),
        torch_version=r.get("torch_version", str, required=False),
        date=r.get("date", str, required=False),
        command=r.get("command", str, required=False),
        spec=spec,
        notes=r.get("notes", str, required=False),
        in_sequence=_parse_in_sequence(r, mbs_list),
    )


def _parse_in_sequence(r: FieldReader, mbs_list: list[int]) -> tuple[InSequence, ...]:
    raw = r.get("in_sequence", list, required=False, default=[])
    out = []
    for i in range(len(raw)):
        c = r.child("in_sequence", i)
        mbs = c.integer("micro_batch_size", positive=True)
        if mbs not in mbs_list:
            raise c.fail("micro_batch_size", f"{mbs} is not one of micro_batch_sizes {mbs_list}")
        out.append(InSequence(micro_batch_size=mbs, fwd_scale=c.number("fwd_scale", positive=True, maximum=MAX_SCALE),
                              bwd_scale=c.number("bwd_scale", positive=True, maximum=MAX_SCALE)))
    return tuple(out)


def _parse_layer(r: FieldReader, position: int, count: int, version: int) -> LayerProfile:
    index = r.integer("index")
    if index != position:
        raise r.fail("index", f"expected {position} (layers must be listed in pipeline order), got {index}")
    shares = r.integer("shares_measurement_with", required=False)
    if shares is not None and not (0 <= shares < count and shares != index):
        raise r.fail("shares_measurement_with", f"must name another layer index in 0..{count - 1}, got {shares}")
    timings_raw = r.get("timings", list)
    if not timings_raw:
        raise r.fail("timings", "must hold at least one micro-batch size")
    timings = tuple(sorted((_parse_timing(r.child("timings", i), version) for i in range(len(timings_raw))),
                           key=lambda t: t.micro_batch_size))
    return LayerProfile(
        index=index,
        name=r.get("name", str),
        kind=r.get("kind", str),
        role=r.choice("role", ROLES),
        param_count=r.integer("param_count", maximum=MAX_PARAMS),
        param_bytes=r.integer("param_bytes", maximum=MAX_BYTES),
        timings=timings,
        shares_measurement_with=shares,
    )


def _parse_timing(r: FieldReader, version: int) -> LayerTiming:
    b = TIMING_BOUNDS
    timing = LayerTiming(
        micro_batch_size=r.integer("micro_batch_size", positive=True, maximum=MAX_MICRO_BATCH),
        fwd_ms=r.number("fwd_ms", maximum=b["fwd_ms"]),
        bwd_ms=r.number("bwd_ms", maximum=b["bwd_ms"]),
        fwd_spread_ms=r.number("fwd_spread_ms", required=False, default=0.0, maximum=b["fwd_spread_ms"]),
        bwd_spread_ms=r.number("bwd_spread_ms", required=False, default=0.0, maximum=b["bwd_spread_ms"]),
        saved_bytes=r.integer("saved_bytes", maximum=b["saved_bytes"]),
        output_bytes=r.integer("output_bytes", maximum=b["output_bytes"]),
        fwd_flops=r.number("fwd_flops", required=False, default=0.0, maximum=b["fwd_flops"]),
        attn_fwd_ms=r.number("attn_fwd_ms", required=False, default=0.0, maximum=b["attn_fwd_ms"]),
        peak_allocated_bytes=r.integer("peak_allocated_bytes", required=False, maximum=b["peak_allocated_bytes"]),
        bwd_input_ms=r.number("bwd_input_ms", required=False, maximum=b["bwd_input_ms"]),
        bwd_weight_ms=r.number("bwd_weight_ms", required=False, maximum=b["bwd_weight_ms"]),
    )
    given = [key for key in ("bwd_input_ms", "bwd_weight_ms") if getattr(timing, key) is not None]
    if given and version < 2:
        raise r.fail(given[0], "the backward split needs schema_version 2")
    if len(given) == 1:
        raise r.fail(given[0], "give both bwd_input_ms and bwd_weight_ms (the backward split) or neither")
    if given and not split_adds_up(timing):
        raise r.fail("bwd_weight_ms", f"bwd_input_ms {timing.bwd_input_ms!r} + bwd_weight_ms {timing.bwd_weight_ms!r} "
                                      f"must equal bwd_ms {timing.bwd_ms!r}")
    return timing


def backward_split(bwd_ms: float, input_ms: float) -> dict[str, float]:
    """LayerTiming's split fields for a backward of ``bwd_ms`` whose input-gradient part took ``input_ms``:
    B is clamped to [0, bwd_ms] (timing noise), W is the rest."""
    b = min(max(input_ms, 0.0), bwd_ms)
    return {"bwd_input_ms": b, "bwd_weight_ms": bwd_ms - b}


def split_adds_up(t: LayerTiming) -> bool:
    """Whether a timing's backward split sums to its ``bwd_ms`` (to 0.1%, rounding in a hand-written file)."""
    assert t.bwd_input_ms is not None and t.bwd_weight_ms is not None
    return abs(t.bwd_input_ms + t.bwd_weight_ms - t.bwd_ms) <= 1e-3 * t.bwd_ms + 1e-9


def check_layer_bounds(layer: LayerProfile, *, origin: str) -> None:
    """Refuse a computed layer (an analytic profile's) whose numbers break the bounds a loaded file must keep.

    A model within pptune.limits can still be absurd in combination (a 16M-token sequence on a tiny GPU): the
    same bounds as for a file then say which number, in one line, instead of an inf or NaN step time later.
    """
    checks = [("param_count", layer.param_count, MAX_PARAMS), ("param_bytes", layer.param_bytes, MAX_BYTES)]
    for t in layer.timings:
        checks += [(f"timings[mbs={t.micro_batch_size}].{k}", getattr(t, k), bound) for k, bound in TIMING_BOUNDS.items()
                   if getattr(t, k) is not None]
    for key, value, bound in checks:
        if not math.isfinite(value) or value > bound:
            raise ConfigError(f"{origin}: layer {layer.name!r}: {key} would be {value:.4g}, above the plausible bound "
                              f"{bound:g} (see pptune/profile/schema.py); use a smaller model, sequence or micro-batch")
