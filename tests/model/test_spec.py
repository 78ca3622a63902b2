"""TransformerSpec: preset shapes and parameter counts, spec strings, and one-line errors for bad specs."""

from __future__ import annotations

import pytest

from pptune.errors import ConfigError
from pptune.model.spec import PRESETS, TransformerSpec, parse_spec, resolve_spec


@pytest.mark.parametrize(
    ("name", "billions"),
    [("gpt2-small", 0.124), ("gpt2-xl", 1.56), ("gpt3-175b", 174.6), ("llama2-7b", 6.74), ("llama2-70b", 69.0)],
)
def test_preset_parameter_counts_match_the_papers(name: str, billions: float) -> None:
    assert PRESETS[name].param_count / 1e9 == pytest.approx(billions, rel=0.01)


def test_megatron_parameter_formula_for_gpt3() -> None:
    # Narayanan et al. SC'21: P = 12 l h^2 (1 + 13/(12h) + (V + s)/(12 l h)).
    s = PRESETS["gpt3-175b"]
    h, lay = s.hidden_size, s.num_layers
    megatron = 12 * lay * h**2 * (1 + 13 / (12 * h) + (s.vocab_size + s.seq_len) / (12 * lay * h))
    assert s.param_count == pytest.approx(megatron, rel=1e-3)


def test_spec_string_defaults_and_overrides() -> None:
    spec = parse_spec("gpt:layers=96,hidden=12288,heads=96,seq=2048,vocab=51200")
    assert (spec.num_layers, spec.ffn_hidden_size, spec.vocab_size, spec.tied_embeddings) == (96, 4 * 12288, 51200, True)
    llama = parse_spec("llama:layers=2,hidden=512,heads=8,kv_heads=2")
    assert (llama.norm, llama.mlp, llama.kv_heads, llama.ffn_hidden_size % 256) == ("rmsnorm", "swiglu", 2, 0)
    assert resolve_spec("gpt2-medium") is PRESETS["gpt2-medium"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("gpt:layers=2,hidden=64", "missing heads="),
        ("gpt:layers=x,hidden=64,heads=2", "layers must be a positive integer"),
        ("gpt:layers=0,hidden=64,heads=4", "layers must be a positive integer, got layers='0'"),
        ("gpt:layers=+4,hidden=64,heads=4", "layers must be a positive integer"),
        ("gpt:layers=4,layers=8,hidden=64,heads=4", "layers= is given twice"),
        ("gpt:layers=4,hidden=64,heads=4,tied=maybe", "tied must be one of"),
        ("gpt:layers=1000000000,hidden=128,heads=4", "layers=1,000,000,000 is above pptune's bound"),
        ("gpt:layers=4,hidden=64,heads=4,seq=" + "9" * 60, "seq=.* is above pptune's bound"),
        ("gpt:layers=2,hidden=64,heads=3", "not divisible by num_heads 3"),
        ("gpt:depth=2", "unknown or malformed item"),
        ("bert:layers=2", "expected '<gpt|llama>"),
    ],
)
def test_bad_spec_strings_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_spec(text)


def test_unknown_model_lists_presets() -> None:
    with pytest.raises(ConfigError, match="gpt2-small"):
        resolve_spec("gpt5")


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="unknown keys"):
        TransformerSpec.from_dict({**PRESETS["gpt2-small"].to_dict(), "depth": 3})
    assert TransformerSpec.from_dict(PRESETS["gpt2-small"].to_dict()) == PRESETS["gpt2-small"]


@pytest.mark.parametrize(("raw", "tied"), [("true", True), ("YES", True), ("1", True), ("false", False), ("no", False),
                                           ("0", False)])
def test_tied_accepts_only_booleans(raw: str, tied: bool) -> None:
    assert parse_spec(f"gpt:layers=2,hidden=64,heads=4,tied={raw}").tied_embeddings is tied


def test_hf_models_are_pointed_at_pptune_profile() -> None:
    with pytest.raises(ConfigError, match="work only in 'pptune profile'"):
        resolve_spec("hf:gpt2")


def test_spec_or_none_names_the_bad_value_and_passes_other_forms() -> None:
    from pptune.model.spec import spec_or_none

    assert spec_or_none("hf:gpt2") is None and spec_or_none("pkg.mod:fn") is None
    assert spec_or_none("gpt2-small") is PRESETS["gpt2-small"]
    with pytest.raises(ConfigError, match="layers='0'"):
        spec_or_none("gpt:layers=0,hidden=64,heads=4")


def test_llama3_405b_shape_is_within_the_bounds() -> None:
    spec = parse_spec("llama:layers=126,hidden=16384,heads=128,kv_heads=8,ffn=53248,seq=131072,vocab=256000")
    assert spec.param_count > 400e9


def test_attention_is_a_spec_input_of_spec_strings_and_presets():
    from pptune.model.spec import resolve_spec, with_attention

    assert resolve_spec("gpt:layers=2,hidden=64,heads=4").attention == "flash"
    unfused = resolve_spec("gpt:layers=2,hidden=64,heads=4,attention=unfused")
    assert unfused.attention == "unfused" and unfused.num_layers == 2
    preset = resolve_spec("gpt3-175b?attention=unfused")
    assert preset.attention == "unfused" and preset.num_layers == 96 and preset.name == "gpt3-175b?attention=unfused"
    assert resolve_spec("gpt2-medium?seq=512&attention=unfused").seq_len == 512
    with pytest.raises(ConfigError, match="attention must be flash or unfused, got 'fused'"):
        resolve_spec("gpt:layers=2,hidden=64,heads=4,attention=fused")
    with pytest.raises(ConfigError, match="unknown model 'gpt9\\?attention=unfused'"):
        resolve_spec("gpt9?attention=unfused")
    # the command line's kernel applies unless the text states another
    assert with_attention("gpt2-small", PRESETS["gpt2-small"], "unfused").attention == "unfused"
    with pytest.raises(ConfigError, match="states attention=unfused but attention flash was asked for"):
        with_attention("gpt3-175b?attention=unfused", preset, "flash")


def test_unfused_attention_prices_the_s_by_s_scores():
    from pptune.hardware import load_cluster
    from pptune.model.spec import resolve_spec
    from pptune.profile.analytic import analytic_profile

    gpu = load_cluster("a100-80g").gpu
    flash = analytic_profile(resolve_spec("gpt3-1.3b"), gpu, micro_batch_sizes=(1,))
    unfused = analytic_profile(resolve_spec("gpt3-1.3b?attention=unfused"), gpu, micro_batch_sizes=(1,))
    explicit = analytic_profile(resolve_spec("gpt3-1.3b"), gpu, micro_batch_sizes=(1,), flash_attention=False)
    assert unfused.layers[1].timings[0].fwd_ms > flash.layers[1].timings[0].fwd_ms
    assert explicit.layers[1].timings == unfused.layers[1].timings and explicit.spec["attention"] == "unfused"
