"""Checks the profile JSON schema: save/load round trip, one-line SchemaErrors naming file and field, and timing interpolation."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from pptune.errors import SchemaError
from pptune.model.spec import PRESETS
from pptune.profile.schema import LayerProfile, LayerTiming, Profile, load_profile, save_profile


def _timing(mbs: int, k: float = 1.0) -> dict[str, Any]:
    return {"micro_batch_size": mbs, "fwd_ms": 2.0 * mbs * k, "bwd_ms": 4.0 * mbs * k, "fwd_spread_ms": 0.1,
            "bwd_spread_ms": 0.2, "saved_bytes": 1000 * mbs, "output_bytes": 100 * mbs, "fwd_flops": 1e6 * mbs,
            "peak_allocated_bytes": None}


def _layer(index: int, role: str, name: str, kind: str, shares: int | None = None) -> dict[str, Any]:
    return {"index": index, "name": name, "kind": kind, "role": role, "param_count": 10 + index,
            "param_bytes": 40 + 4 * index, "timings": [_timing(1), _timing(2), _timing(4)],
            "shares_measurement_with": shares}


def _profile() -> dict[str, Any]:
    return {
        "schema_version": 1, "model": "gpt:layers=2,hidden=64,heads=4", "source": "measured", "device": "cpu",
        "device_name": "AMD EPYC", "dtype": "fp32", "seq_len": 128, "micro_batch_sizes": [1, 2, 4], "tp": 1,
        "threads": 1, "torch_version": "2.13.0", "date": "2026-01-01T00:00:00", "command": "pptune profile x",
        "spec": None, "notes": None,
        "layers": [_layer(0, "embedding", "embedding", "EmbeddingPipe"),
                   _layer(1, "block", "block.0", "TransformerBlockPipe"),
                   _layer(2, "block", "block.1", "TransformerBlockPipe", shares=1),
                   _layer(3, "head", "head", "HeadPipe")],
    }


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_round_trip(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, _profile()))
    assert profile.num_layers == 4 and profile.micro_batch_sizes == (1, 2, 4) and profile.layers[2].shares_measurement_with == 1
    again = load_profile(save_profile(profile, tmp_path / "out" / "again.json"))
    assert again == profile
    assert Profile.from_dict(profile.to_dict()) == profile
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind


def _set(path: str, value: Any) -> Any:
    """A mutation setting a dotted path ('layers.1.timings.0.fwd_ms') in the profile dict; value DELETE removes it."""
    def apply(data: dict) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        key: Any = int(last) if isinstance(node, list) else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return apply


DELETE = object()

def _add_split(data: dict) -> None:
    """Make ``data`` a version-2 profile whose timings carry the backward split (input 0.625, weight 0.375 of bwd)."""
    data["schema_version"] = 2
    for layer in data["layers"]:
        for t in layer["timings"]:
            t["bwd_input_ms"], t["bwd_weight_ms"] = 0.625 * t["bwd_ms"], 0.375 * t["bwd_ms"]


def _split_then(mutate: Any) -> Any:
    def apply(data: dict) -> None:
        _add_split(data)
        mutate(data)
    return apply


MALFORMED = [
    ("missing model", _set("model", DELETE), "'model'"),
    ("missing layer kind", _set("layers.1.kind", DELETE), "'layers[1].kind'"),
    ("missing time", _set("layers.1.timings.0.fwd_ms", DELETE), "'layers[1].timings[0].fwd_ms'"),
    ("negative time", _set("layers.2.timings.1.bwd_ms", -1.0), "'layers[2].timings[1].bwd_ms'"),
    ("negative attention time", _set("layers.1.timings.0.attn_fwd_ms", -0.5), "'layers[1].timings[0].attn_fwd_ms'"),
    ("NaN time", _set("layers.0.timings.0.fwd_ms", math.nan), "'layers[0].timings[0].fwd_ms'"),
    ("infinite time", _set("layers.0.timings.0.fwd_ms", math.inf), "'layers[0].timings[0].fwd_ms'"),
    ("string seq_len", _set("seq_len", "128"), "'seq_len'"),
    ("bool param_count", _set("layers.3.param_count", True), "'layers[3].param_count'"),
    ("float saved_bytes", _set("layers.1.timings.2.saved_bytes", 1.5), "'layers[1].timings[2].saved_bytes'"),
    ("unknown dtype", _set("dtype", "int4"), "'dtype'"),
    ("unknown role", _set("layers.1.role", "decoder"), "'layers[1].role'"),
    ("unknown version", _set("schema_version", 3), "'schema_version'"),
    # The backward split (schema 2): both parts or neither, summing to bwd_ms, not in a version-1 file.
    ("split in version 1", _set("layers.1.timings.0.bwd_weight_ms", 2.0), "'layers[1].timings[0].bwd_weight_ms'"),
    ("split: one part only", _split_then(_set("layers.1.timings.0.bwd_input_ms", None)),
     "'layers[1].timings[0].bwd_weight_ms'"),
    ("split: parts do not add up", _split_then(_set("layers.1.timings.0.bwd_weight_ms", 3.0)),
     "'layers[1].timings[0].bwd_weight_ms'"),
    ("split: negative part", _split_then(_set("layers.1.timings.0.bwd_input_ms", -1.0)),
     "'layers[1].timings[0].bwd_input_ms'"),
    ("split: huge part", _split_then(_set("layers.1.timings.0.bwd_weight_ms", 1e308)),
     "'layers[1].timings[0].bwd_weight_ms'"),
    ("index out of order", _set("layers.2.index", 3), "'layers[2].index'"),
    ("layer not an object", _set("layers.1", [1, 2]), "layers[1]"),
    ("sizes differ", _set("layers.1.timings", [_timing(1), _timing(2), _timing(8)]), "'layers[1].timings'"),
    ("duplicate sizes", _set("micro_batch_sizes", [1, 2, 2]), "'micro_batch_sizes'"),
    ("zero size", _set("micro_batch_sizes", [0, 1, 2]), "'micro_batch_sizes'"),
    ("no layers", _set("layers", []), "'layers'"),
    ("shares itself", _set("layers.2.shares_measurement_with", 2), "'layers[2].shares_measurement_with'"),
    ("bad spec", _set("spec", {"name": "x", "num_layers": -1}), "'spec'"),
    # Huge finite numbers: refused here, not turned into inf/NaN step times by the cost model (issue 19).
    ("huge backward", _set("layers.1.timings.0.bwd_ms", 1e308), "'layers[1].timings[0].bwd_ms'"),
    ("huge spread", _set("layers.1.timings.0.fwd_spread_ms", 1e9), "'layers[1].timings[0].fwd_spread_ms'"),
    ("huge saved bytes", _set("layers.1.timings.0.saved_bytes", 2**60), "'layers[1].timings[0].saved_bytes'"),
    ("huge flops", _set("layers.1.timings.0.fwd_flops", 1e300), "'layers[1].timings[0].fwd_flops'"),
    ("huge params", _set("layers.1.param_count", 10**30), "'layers[1].param_count'"),
    ("huge seq_len", _set("seq_len", 10**12), "'seq_len'"),
    ("huge tp", _set("tp", 10**12), "'tp'"),
    ("huge micro-batch", _set("micro_batch_sizes", [1, 2, 10**9]), "'micro_batch_sizes'"),
    ("huge spec", _set("spec", {**PRESETS["gpt2-small"].to_dict(), "num_layers": 10**9}), "'spec'"),
    ("in-sequence size not profiled", _set("in_sequence", [{"micro_batch_size": 3, "fwd_scale": 1.1, "bwd_scale": 1.2}]),
     "'in_sequence[0].micro_batch_size'"),
    ("in-sequence factor zero", _set("in_sequence", [{"micro_batch_size": 1, "fwd_scale": 0, "bwd_scale": 1.2}]),
     "'in_sequence[0].fwd_scale'"),
    ("in-sequence factor huge", _set("in_sequence", [{"micro_batch_size": 1, "fwd_scale": 1.0, "bwd_scale": 1e9}]),
     "'in_sequence[0].bwd_scale'"),
]


@pytest.mark.parametrize(("what", "mutate", "field"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_profiles_name_file_and_field(tmp_path: Path, what: str, mutate: Any, field: str) -> None:
    data = copy.deepcopy(_profile())
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(SchemaError) as info:
        load_profile(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and field in msg and "\n" not in msg


@pytest.mark.parametrize(("text", "problem"), [("{oops", "not valid JSON"), ("[1, 2]", "expected an object")])
def test_not_json_and_not_an_object(tmp_path: Path, text: str, problem: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SchemaError, match=problem) as info:
        load_profile(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="cannot read"):
        load_profile(tmp_path / "nope.json")


def test_valid_spec_is_kept(tmp_path: Path) -> None:
    data = _profile()
    data["spec"] = {"name": "tiny", "num_layers": 2, "hidden_size": 64, "num_heads": 4, "ffn_hidden_size": 256,
                    "vocab_size": 100, "seq_len": 128}
    assert load_profile(_write(tmp_path, data)).spec == data["spec"]


def _split_profile() -> dict[str, Any]:
    data = _profile()
    _add_split(data)
    return data


def test_version_2_split_round_trips_and_version_1_still_reads(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, _split_profile()))
    t = profile.layers[1].timings[0]
    assert profile.schema_version == 2 and (t.bwd_input_ms, t.bwd_weight_ms) == (2.5, 1.5)
    assert load_profile(save_profile(profile, tmp_path / "again.json")) == profile
    old = load_profile(_write(tmp_path, _profile()))  # version 1: no split
    assert old.schema_version == 1 and old.layers[1].timings[0].bwd_weight_ms is None
    # Interpolated and extrapolated timings carry the split, still adding up
    for mbs in (3, 8):
        x = profile.layers[1].timing(mbs)
        assert x.bwd_input_ms == pytest.approx(0.625 * x.bwd_ms) and x.bwd_weight_ms == pytest.approx(0.375 * x.bwd_ms)
    assert old.layers[1].timing(3).bwd_weight_ms is None


def _layer_profile(points: dict[int, float]) -> LayerProfile:
    timings = tuple(LayerTiming(micro_batch_size=m, fwd_ms=t, bwd_ms=2 * t, saved_bytes=int(100 * t),
                                output_bytes=int(10 * t), fwd_flops=1e3 * t, peak_allocated_bytes=int(50 * t),
                                attn_fwd_ms=t / 10)
                    for m, t in sorted(points.items()))
    return LayerProfile(index=0, name="block.0", kind="B", role="block", param_count=1, param_bytes=4, timings=timings)


def test_timing_is_exact_at_profiled_sizes_and_linear_between() -> None:
    layer = _layer_profile({2: 10.0, 4: 14.0, 8: 30.0})
    assert layer.timing(4) is layer.timings[1]
    t3 = layer.timing(3)
    assert (t3.micro_batch_size, t3.fwd_ms, t3.bwd_ms) == (3, 12.0, 24.0)
    assert (t3.saved_bytes, t3.output_bytes, t3.peak_allocated_bytes) == (1200, 120, 600)
    t6 = layer.timing(6)
    assert t6.fwd_ms == pytest.approx(22.0) and t6.fwd_flops == pytest.approx(22e3)
    assert t3.attn_fwd_ms == pytest.approx(1.2) and t6.attn_fwd_ms == pytest.approx(2.2)


def test_timing_beyond_the_profiled_sizes_scales_the_nearest_per_sample() -> None:
    layer = _layer_profile({2: 10.0, 4: 14.0})
    assert layer.timing(8).fwd_ms == pytest.approx(28.0) and layer.timing(16).fwd_ms == pytest.approx(56.0)
    assert layer.timing(1).fwd_ms == pytest.approx(5.0) and layer.timing(1).saved_bytes == 500
    assert layer.timing(8).attn_fwd_ms == pytest.approx(2.8)


def test_attention_time_is_optional_and_round_trips(tmp_path: Path) -> None:
    data = copy.deepcopy(_profile())
    data["layers"][1]["timings"][0]["attn_fwd_ms"] = 0.25
    profile = load_profile(_write(tmp_path, data))
    assert profile.layers[1].timings[0].attn_fwd_ms == 0.25
    assert profile.layers[1].timings[1].attn_fwd_ms == 0.0  # absent: unknown (files written before the field)
    assert load_profile(save_profile(profile, tmp_path / "again.json")) == profile
