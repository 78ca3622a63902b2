"""Pipeline layers of a TransformerSpec: shapes, parameter counts, causality, tying, and the DeepSpeed LayerSpec list."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pptune.model.blocks import TransformerBlockPipe
from pptune.model.layers import EmbeddingPipe, HeadPipe, build_layer_specs, build_layers, pipeline_loss
from pptune.model.resolve import TiedForward, modules_from_items
from pptune.model.spec import parse_spec

GPT = parse_spec("gpt:layers=2,hidden=64,heads=2,vocab=128,seq=32")
LLAMA = parse_spec("llama:layers=2,hidden=64,heads=4,kv_heads=2,ffn=96,vocab=128,seq=32")
SPECS = {
    "gpt": GPT,
    "gpt-untied": GPT.replace(tied_embeddings=False),
    "llama": LLAMA,
    "llama-tied": LLAMA.replace(tied_embeddings=True),
    "gpt-swiglu-rope": GPT.replace(mlp="swiglu", position="rope"),
}


def run_chain(layers, ids):
    x = ids
    for layer in layers:
        x = layer(x)
    return x


def unique_param_count(layers) -> int:
    return sum(p.numel() for p in {id(p): p for layer in layers for p in layer.parameters()}.values())


@pytest.mark.parametrize("name", list(SPECS))
def test_chain_shapes_and_loss(name):
    spec = SPECS[name]
    layers = build_layers(spec)
    assert [type(m) for m in layers] == [EmbeddingPipe, TransformerBlockPipe, TransformerBlockPipe, HeadPipe]
    ids = torch.randint(0, spec.vocab_size, (3, 16))
    hidden = layers[0](ids)
    assert hidden.shape == (3, 16, spec.hidden_size)
    for block in layers[1:-1]:
        assert block(hidden).shape == hidden.shape
    logits = run_chain(layers, ids)
    assert logits.shape == (3, 16, spec.vocab_size)
    loss = pipeline_loss(logits, ids)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in layers[1].parameters())
    if not spec.tied_embeddings:  # untied logits start near zero, so the loss starts near ln(V)
        assert abs(loss.item() - torch.log(torch.tensor(float(spec.vocab_size))).item()) < 0.5


@pytest.mark.parametrize("name", list(SPECS))
def test_parameter_counts_match_the_spec(name):
    spec = SPECS[name]
    layers = build_layers(spec)
    assert sum(p.numel() for p in layers[1].parameters()) == spec.block_param_count
    assert unique_param_count(layers) == spec.param_count


def test_tied_head_shares_the_embedding_parameters():
    layers = build_layers(GPT)
    embedding, head = layers[0], layers[-1]
    assert head.lm_head.weight is embedding.word.weight
    assert head.norm is embedding.final_norm
    untied = build_layers(GPT.replace(tied_embeddings=False))
    assert untied[-1].lm_head.weight is not untied[0].word.weight
    assert untied[0].final_norm is None


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_blocks_are_causal(name):
    spec = SPECS[name]
    torch.manual_seed(0)
    layers = build_layers(spec)
    ids = torch.randint(0, spec.vocab_size, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % spec.vocab_size
    with torch.no_grad():
        a, b = run_chain(layers, ids), run_chain(layers, changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_rope_model_has_no_position_table_and_handles_any_length():
    layers = build_layers(LLAMA)
    assert layers[0].position is None
    ids = torch.randint(0, LLAMA.vocab_size, (1, 3 * LLAMA.seq_len))  # longer than spec.seq_len: fine with RoPE
    assert run_chain(layers, ids).shape == (1, 3 * LLAMA.seq_len, LLAMA.vocab_size)


def test_pipeline_loss_is_unshifted_cross_entropy():
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    expected = torch.nn.functional.cross_entropy(logits.reshape(10, 7), labels.reshape(10))
    torch.testing.assert_close(pipeline_loss(logits, labels), expected)
    assert pipeline_loss(logits.bfloat16(), labels).dtype == torch.float32


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_layer_specs_build_the_same_model_deepspeed_would(name):
    from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec

    spec = SPECS[name]
    specs = build_layer_specs(spec)
    assert len(specs) == spec.num_layers + 2
    assert all(isinstance(s, LayerSpec) for s in specs)
    tied = [s for s in specs if isinstance(s, TiedLayerSpec)]
    if spec.tied_embeddings:
        assert [s.key for s in tied] == ["embed", "embed"] and tied[-1].forward_fn is not None
        assert tied[0].tied_weight_attr == ["word.weight"]
    else:
        assert tied == []
    # DeepSpeed's own partition helpers, run offline on the list: type:transformerblockpipe finds every block.
    fake = SimpleNamespace(_layer_specs=specs)
    assert PipelineModule._find_layer_type(fake, "transformerblockpipe") == list(range(1, spec.num_layers + 1))
    counts = PipelineModule._count_layer_params(fake)
    assert counts[1] == spec.block_param_count
    # Built as PipelineModule._build builds them (one module per tie key), the chain computes what build_layers does.
    torch.manual_seed(7)
    from_specs = modules_from_items(name, specs)
    torch.manual_seed(7)
    direct = build_layers(spec)
    if spec.tied_embeddings:
        assert isinstance(from_specs[-1], TiedForward) and from_specs[-1].tied is from_specs[0]
    ids = torch.randint(0, spec.vocab_size, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(run_chain(from_specs, ids), run_chain(direct, ids))
