"""load_model_layers: presets, spec strings, user factories (modules and LayerSpecs), and one-line errors."""

from __future__ import annotations

import textwrap

import pytest
import torch

from pptune.errors import ConfigError
from pptune.model.layers import EmbeddingPipe, HeadPipe, pipeline_loss
from pptune.model.resolve import ModelLayers, infer_roles, load_model_layers

TINY = "gpt:layers=3,hidden=64,heads=2,vocab=128,seq=32"


def test_spec_string_builds_layers_roles_and_loss():
    model = load_model_layers(TINY, 16)
    assert isinstance(model, ModelLayers)
    assert model.roles == ["embedding", "block", "block", "block", "head"]
    assert isinstance(model.layers[0], EmbeddingPipe) and isinstance(model.layers[-1], HeadPipe)
    assert model.spec is not None and model.spec.num_layers == 3
    assert model.vocab_size == 128 and model.loss_fn is pipeline_loss and model.default_seq_len == 32
    name, layers, spec = model  # the tuple form of CONTRACTS.md
    assert (name, layers, spec) == (TINY, model.layers, model.spec)


def test_same_model_twice_has_the_same_weights():
    a, b = load_model_layers(TINY), load_model_layers(TINY)
    torch.testing.assert_close(a.layers[1].attn.qkv.weight, b.layers[1].attn.qkv.weight)


def test_preset_resolves_without_touching_other_rng_state():
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    model = load_model_layers("gpt2-small", 128)
    assert torch.rand(1) == expected
    assert model.spec.name == "gpt2-small" and len(model.layers) == 14


def test_seq_len_longer_than_learned_positions_is_refused():
    with pytest.raises(ConfigError, match="seq_len 64 is longer than its 32 learned positions"):
        load_model_layers(TINY, 64)
    load_model_layers("llama:layers=1,hidden=64,heads=2,vocab=128,seq=32", 64)  # RoPE: no table, no limit


@pytest.mark.parametrize("bad", ["no-such-model", "gpt3-7b", "hf:bert", "gpt:layers=2"])
def test_unknown_or_malformed_models_raise_one_line(bad):
    with pytest.raises(ConfigError) as info:
        load_model_layers(bad, 16)
    assert "\n" not in str(info.value)


def test_a_model_larger_than_memory_is_refused_before_building():
    with pytest.raises(ConfigError, match=r"gpt3-175b.*parameters.*GiB"):
        load_model_layers("gpt3-175b", 128)


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "my_layers.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn
        from deepspeed.pipe import LayerSpec, TiedLayerSpec

        class Embed(nn.Module):
            def __init__(self, vocab=100, hidden=16):
                super().__init__()
                self.emb = nn.Embedding(vocab, hidden)
            def forward(self, ids):
                return self.emb(ids)

        class Mix(nn.Module):
            def __init__(self, hidden=16):
                super().__init__()
                self.lin = nn.Linear(hidden, hidden)
            def forward(self, x):
                return torch.relu(self.lin(x))

        def head_fn(embed, x):
            return x @ embed.emb.weight.t()

        def modules(seq_len=None):
            return [Embed(), Mix(), Mix(), nn.Linear(16, 100)]

        def specs():
            return [TiedLayerSpec("e", Embed), LayerSpec(Mix), LayerSpec(Mix), lambda x: x * 2,
                    TiedLayerSpec("e", Embed, forward_fn=head_fn)]

        def no_embedding():
            return [nn.Linear(4, 4)]

        def broken():
            raise ValueError("boom")

        def not_a_list():
            return 42
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_layers"


def test_factory_of_modules(factory_module):
    model = load_model_layers(f"{factory_module}:modules", 8)
    assert model.roles == ["embedding", "block", "block", "head"]
    assert model.spec is None and model.loss_fn is None and model.vocab_size == 100
    x = torch.randint(0, 100, (2, 8))
    for layer in model.layers:
        x = layer(x)
    assert x.shape == (2, 8, 100)


def test_factory_of_layer_specs_builds_tied_modules_once(factory_module):
    model = load_model_layers(f"{factory_module}:specs", 8)
    assert model.roles == ["embedding", "block", "block", "other", "head"]
    assert model.layers[-1].tied is model.layers[0]
    x = torch.randint(0, 100, (2, 8))
    for layer in model.layers:
        x = layer(x)
    assert x.shape == (2, 8, 100)


@pytest.mark.parametrize("function, message", [
    ("no_embedding", "has no nn.Embedding"),
    ("broken", "the factory raised ValueError: boom"),
    ("not_a_list", "must return a non-empty list"),
    ("missing", "has no function 'missing'"),
])
def test_factory_errors(factory_module, function, message):
    with pytest.raises(ConfigError, match=message):
        load_model_layers(f"{factory_module}:{function}", 8)


def test_factory_module_that_does_not_import():
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.mod'"):
        load_model_layers("no_such_pkg.mod:make", 8)


def test_infer_roles():
    mods = [torch.nn.Embedding(2, 2), torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]
    assert infer_roles(mods) == ["embedding", "block", "other", "block", "head"]


def test_unfused_attention_is_refused_for_pptunes_own_layers():
    with pytest.raises(ConfigError, match="attention=unfused is an analytic-profile input"):
        load_model_layers("gpt:layers=1,hidden=32,heads=2,attention=unfused")
