"""Checks that published large-scale configurations are feasible in the model (issue 7, item 5) and a control is not."""

from __future__ import annotations

from pptune.cost.estimate import estimate
from pptune.hardware import load_cluster
from pptune.model.spec import TransformerSpec
from pptune.parallel import ParallelConfig
from pptune.profile.analytic import analytic_profile

GIB = 2**30


def _gpt(name: str, layers: int, hidden: int, heads: int, vocab: int) -> TransformerSpec:
    return TransformerSpec(name=name, num_layers=layers, hidden_size=hidden, num_heads=heads,
                           ffn_hidden_size=4 * hidden, vocab_size=vocab, seq_len=2048)


def _estimate(spec: TransformerSpec, gpus: int, **config):
    cluster = load_cluster("a100-80g", num_gpus=gpus)
    profile = analytic_profile(spec, cluster.gpu, tp=config["tp"], dtype="fp16", micro_batch_sizes=(1,),
                               flash_attention=False)
    return estimate(profile, cluster, ParallelConfig(dtype="fp16", micro_batch_size=1, **config))


def test_gpt3_175b_on_1024_a100s_megatron_interleaved() -> None:
    # Megatron's GPT-3 setting: tp 8 x pp 8 (interleaved, 4 layers per chunk), dp 16, global batch 1536, full recompute.
    e = _estimate(_gpt("gpt3-175b", 96, 12288, 96, 51200), 1024, tp=8, pp=8, dp=16, num_microbatches=96,
                  schedule="interleaved_1f1b", vpp=3, recompute="full", partition="type:transformerblock",
                  target="megatron")
    assert e.feasible and e.peak_memory_bytes < 80 * GIB
    assert 100 < e.tflops_per_gpu < 0.859 * 312  # a real rate, below the A100's maximum achievable matmul rate
    assert 10_000 < e.step_time_ms < 60_000


def test_mt_nlg_530b_on_2240_a100s() -> None:
    # Smith et al. 2022 Sec 2.4: tp 8 x pp 35 x dp 8 = 2240 GPUs, global batch 1920, micro-batch 1.
    e = _estimate(_gpt("mt-nlg-530b", 105, 20480, 128, 50272), 2240, tp=8, pp=35, dp=8, num_microbatches=240,
                  recompute="full", partition="type:transformerblock", zero_stage=1)
    assert e.feasible and e.peak_memory_bytes < 80 * GIB
    assert 20_000 < e.step_time_ms < 120_000


def test_the_same_175b_without_pipeline_does_not_fit() -> None:
    e = _estimate(_gpt("gpt3-175b", 96, 12288, 96, 51200), 1024, tp=8, pp=1, dp=128, num_microbatches=12,
                  recompute="full", partition="uniform", target="megatron")
    assert not e.feasible and "GiB" in (e.infeasible_reason or "")
