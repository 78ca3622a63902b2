"""The profiler on a tiny spec: layer list, shared measurements, exact bytes and FLOPs, round trip, and input errors."""

from __future__ import annotations

import pytest
import torch

from pptune.errors import ConfigError
from pptune.model.resolve import load_model_layers
from pptune.model.spec import parse_spec
from pptune.profile.measure import profile_model
from pptune.profile.schema import load_profile, save_profile

TINY = "gpt:layers=3,hidden=64,heads=2,vocab=128,seq=32"
SPEC = parse_spec(TINY)
SEQ = 16
FAST = {"warmup": 5, "repeat": 2, "progress": False, "threads": 1}  # 1 thread: no OpenMP contention in CI


@pytest.fixture(scope="module")
def profile():
    return profile_model(TINY, seq_len=SEQ, micro_batch_sizes=[2, 1], command="pptune profile tiny", **FAST)


def test_layers_roles_and_shared_measurements(profile):
    assert [layer.name for layer in profile.layers] == ["embedding", "block.0", "block.1", "block.2", "head"]
    assert [layer.kind for layer in profile.layers] == ["EmbeddingPipe", *["TransformerBlockPipe"] * 3, "HeadPipe"]
    assert [layer.role for layer in profile.layers] == ["embedding", "block", "block", "block", "head"]
    assert [layer.shares_measurement_with for layer in profile.layers] == [None, None, 1, 1, None]
    assert profile.layers[2].timings == profile.layers[1].timings
    assert profile.micro_batch_sizes == (1, 2)
    for layer in profile.layers:
        assert [t.micro_batch_size for t in layer.timings] == [1, 2]
        assert all(t.fwd_ms > 0 and t.bwd_ms > 0 and t.fwd_spread_ms >= 0 for t in layer.timings)
        assert all(t.peak_allocated_bytes is None for t in layer.timings)  # CPU


def test_metadata(profile):
    assert (profile.model, profile.source, profile.device, profile.dtype) == (TINY, "measured", "cpu", "fp32")
    assert profile.seq_len == SEQ and profile.threads == 1 and profile.tp == 1
    assert profile.torch_version == torch.__version__ and profile.command == "pptune profile tiny"
    assert profile.spec == SPEC.to_dict() and profile.device_name and profile.date
    assert "loss" in profile.notes


def test_parameters_counted_once(profile):
    embedding, block, head = profile.layers[0], profile.layers[1], profile.layers[-1]
    assert block.param_count == SPEC.block_param_count and block.param_bytes == 4 * SPEC.block_param_count
    # Tied: the word matrix and the final norm belong to the embedding, the head owns nothing new.
    assert embedding.param_count == SPEC.embedding_param_count + 2 * SPEC.hidden_size
    assert head.param_count == 0
    assert profile.param_count == SPEC.param_count


def test_exact_bytes_and_flops(profile):
    h, v, f = SPEC.hidden_size, SPEC.vocab_size, SPEC.ffn_hidden_size
    for b in (1, 2):
        emb, block, head = (profile.layers[i].timing(b) for i in (0, 1, 4))
        assert emb.output_bytes == block.output_bytes == b * SEQ * h * 4
        assert head.output_bytes == b * SEQ * v * 4  # the logits
        assert emb.saved_bytes == b * SEQ * 8 + SEQ * 8  # token ids and position ids (int64)
        assert emb.fwd_flops == 0
        # GEMMs 2*b*s*(h*3h + h*h + 2*h*f), causal attention 2*b*s^2*h (half the full score matrix's 4*b*s^2*h,
        # as the analytic profile and Megatron-LM count model FLOPs)
        assert block.fwd_flops == 2 * b * SEQ * (3 * h * h + h * h + 2 * h * f) + 2 * b * SEQ * SEQ * h
        assert head.fwd_flops == 2 * b * SEQ * h * v
        # The head with its loss keeps at least the fp32 log-probabilities and the norm's input.
        assert head.saved_bytes >= b * SEQ * v * 4 + b * SEQ * h * 4
    one, two = profile.layers[1].timing(1), profile.layers[1].timing(2)
    assert two.saved_bytes == 2 * one.saved_bytes > 10 * one.output_bytes


def test_round_trip(profile, tmp_path):
    path = save_profile(profile, tmp_path / "tiny.json")
    assert load_profile(path) == profile


def test_threads_are_restored():
    before = torch.get_num_threads()
    profile_model(TINY, seq_len=8, micro_batch_sizes=[1], **{**FAST, "threads": before + 1})
    assert torch.get_num_threads() == before


def test_bf16_halves_parameter_and_activation_bytes():
    p = profile_model(TINY, seq_len=8, micro_batch_sizes=[1], dtype="bf16", **FAST)
    block = p.layers[1]
    assert p.dtype == "bf16" and block.param_bytes == 2 * block.param_count
    assert block.timing(1).output_bytes == 8 * SPEC.hidden_size * 2


def test_layers_already_built_and_a_llama_spec():
    model = load_model_layers("llama:layers=2,hidden=64,heads=4,kv_heads=2,vocab=128,seq=16", 40)
    p = profile_model(model, seq_len=40, micro_batch_sizes=[1], **FAST)  # RoPE: longer than spec.seq_len is fine
    assert [layer.shares_measurement_with for layer in p.layers] == [None, None, 1, None]
    assert p.layers[-1].param_count == 64 + 128 * 64  # untied: RMSNorm weight and the LM head


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"dtype": "fp8"}, "unknown dtype 'fp8'"),
    ({"micro_batch_sizes": []}, "micro_batch_sizes is empty"),
    ({"micro_batch_sizes": [0, 2]}, r"positive integers, got \[0, 2\]"),
    ({"warmup": 3}, "warmup must be an integer >= 5, got 3"),
    ({"repeat": 0}, "repeat must be an integer >= 1, got 0"),
    ({"threads": 0}, "threads must be a positive integer, got 0"),
    ({"seq_len": 64}, "seq_len 64 is longer than its 32 learned positions"),
])
def test_bad_input_raises_one_line(kwargs, message):
    args = {"seq_len": 8, "micro_batch_sizes": [1], **FAST, **kwargs}
    with pytest.raises(ConfigError, match=message) as info:
        profile_model(TINY, **args)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_a_gpu():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        profile_model(TINY, seq_len=8, micro_batch_sizes=[1], device="cuda", **FAST)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_profile_records_peak_memory():
    p = profile_model(TINY, seq_len=SEQ, micro_batch_sizes=[1, 2], device="cuda", dtype="bf16", **FAST)
    assert p.device == "cuda" and p.device_name
    for layer in p.layers:
        for t in layer.timings:
            assert t.fwd_ms > 0 and t.peak_allocated_bytes is not None and t.peak_allocated_bytes > 0
    assert p.layers[1].timing(2).fwd_flops == 2 * p.layers[1].timing(1).fwd_flops
