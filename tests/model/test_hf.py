"""The Hugging Face adapter: tiny GPT-2 and Llama configs split into pipeline layers compute the model's own logits."""

from __future__ import annotations

import pytest
import torch

from pptune.errors import ConfigError
from pptune.model.resolve import load_model_layers

transformers = pytest.importorskip("transformers")

GPT2 = "hf:gpt2?n_layer=2&n_embd=64&n_head=2&vocab_size=128&n_positions=32&resid_pdrop=0&embd_pdrop=0&attn_pdrop=0"
LLAMA = ("hf:llama?num_hidden_layers=2&hidden_size=64&intermediate_size=96&num_attention_heads=4"
         "&num_key_value_heads=2&vocab_size=128&max_position_embeddings=64")


def chain(layers, ids):
    x = ids
    for layer in layers:
        x = layer(x)
    return x


def test_parse_overrides():
    from pptune.model.hf import parse_hf_model

    assert parse_hf_model("hf:gpt2?n_layer=4&layer_norm_epsilon=1e-6&scale_attn_weights=false&activation_function=relu") \
        == ("gpt2", {"n_layer": 4, "layer_norm_epsilon": 1e-6, "scale_attn_weights": False, "activation_function": "relu"})


@pytest.mark.parametrize("name", [GPT2, LLAMA])
def test_split_model_computes_the_hf_logits(name):
    from pptune.model import hf

    model = load_model_layers(name, 16)
    assert model.roles == ["embedding", "block", "block", "head"]
    assert [type(m).__name__ for m in model.layers[1:-1]] == ["HfTransformerBlockPipe"] * 2
    # The split layers are the HF model's own modules: rebuild the same model with the same seed and compare.
    config = hf.hf_config(name)
    torch.manual_seed(0)
    reference = hf._model_class(config)(config).eval()
    for layer in model.layers:
        layer.eval()
    ids = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(chain(model.layers, ids), reference(ids).logits)


def test_gpt2_tied_weight_is_shared_and_blocks_are_causal():
    model = load_model_layers(GPT2, 16)
    assert model.layers[-1].lm_head.weight is model.layers[0].word.weight
    for layer in model.layers:
        layer.eval()
    ids = torch.randint(0, 128, (1, 12))
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % 128
    with torch.no_grad():
        torch.testing.assert_close(chain(model.layers, ids)[:, :6], chain(model.layers, changed)[:, :6])


def test_hf_errors_are_one_line():
    with pytest.raises(ConfigError, match="GPT2Config has no field"):
        load_model_layers("hf:gpt2?n_layers=2", 16)
    with pytest.raises(ConfigError, match="seq_len 64 is longer than its 32 learned positions"):
        load_model_layers(GPT2, 64)
    with pytest.raises(ConfigError, match="malformed override"):
        load_model_layers("hf:gpt2?n_layer", 16)
    with pytest.raises(ConfigError, match="parameters"):
        load_model_layers("hf:llama?num_hidden_layers=400&hidden_size=8192&intermediate_size=28672", 16)


@pytest.mark.parametrize(("model", "fragment"), [
    ("hf:gpt2?n_layer=2&n_embd=64", "n_embd=64 is not divisible by n_head=12 (its default)"),
    ("hf:gpt2?n_layer=two", "n_layer must be an integer, got n_layer='two'"),
    ("hf:gpt2?n_layer=-1", "n_layer must be a positive integer, got n_layer=-1"),
    ("hf:gpt2?n_layer=2&n_layer=3", "n_layer= is given twice"),
    ("hf:gpt2?n_layer=100000", "above pptune's bound"),
    ("hf:gpt2?scale_attn_weights=7", "scale_attn_weights must be true or false"),
    ("hf:llama?num_attention_heads=4&num_key_value_heads=3&hidden_size=64", "not divisible by num_key_value_heads=3"),
])
def test_hf_shape_errors_are_one_line_before_transformers_builds(model, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_model_layers(model, 16)


def test_parameter_counts_read_in_words():
    from pptune.model.resolve import format_count

    assert format_count(49_984e9) == "49.98 trillion"
    assert format_count(124_439_808) == "124.44 million"
    assert format_count(7) == "7"
