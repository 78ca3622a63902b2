"""Factories for the cost-model tests: synthetic profiles (uniform blocks) and small clusters."""

from __future__ import annotations

import pytest

from pptune.hardware import GPU, Cluster
from pptune.profile.schema import LayerProfile, LayerTiming, Profile


def synthetic_profile(*, blocks: int = 8, block_fwd_ms: float = 1.0, block_bwd_ms: float = 2.0,
                      edge_ms: float | None = None, hidden: int = 1024, heads: int = 16, seq: int = 512,
                      vocab: int = 32000, tied: bool = False, dtype: str = "bf16", tp: int = 1,
                      micro_batch_sizes: tuple[int, ...] = (1, 2, 4), with_spec: bool = True,
                      kinds: tuple[str, str, str] = ("EmbeddingPipe", "TransformerBlockPipe", "HeadPipe")) -> Profile:
    """Embedding, ``blocks`` identical blocks and a head, linear in the micro-batch size.

    ``edge_ms=None`` leaves out the embedding and head (a profile of identical layers only).
    Block bytes follow Korthikanti et al.: saved 34*s*b*h + 5*a*s^2*b, output 2*s*b*h (16-bit).
    """
    e = 2 if dtype != "fp32" else 4
    block_params = 12 * hidden * hidden // tp
    emb_params = vocab * hidden // tp

    def timing(mbs: int, fwd: float, bwd: float, saved: int, out: int, flops: float) -> LayerTiming:
        return LayerTiming(micro_batch_size=mbs, fwd_ms=fwd * mbs, bwd_ms=bwd * mbs, saved_bytes=saved * mbs,
                           output_bytes=out * mbs, fwd_flops=flops * mbs)

    sbh = seq * hidden
    layers = []
    if edge_ms is not None:
        layers.append(("embedding", kinds[0], emb_params,
                       [timing(b, edge_ms, edge_ms, sbh * e, sbh * e, 0.0) for b in micro_batch_sizes]))
    block_saved = (34 * sbh + 5 * heads * seq * seq) * e // 2 // 1
    block_flops = (24 * seq * hidden * hidden + 4 * seq * seq * hidden) / tp
    for _ in range(blocks):
        layers.append(("block", kinds[1], block_params,
                       [timing(b, block_fwd_ms, block_bwd_ms, block_saved, sbh * e, block_flops)
                        for b in micro_batch_sizes]))
    if edge_ms is not None:
        head_params = 2 * hidden + (0 if tied else emb_params)
        logits = seq * vocab * e // tp
        layers.append(("head", kinds[2], head_params,
                       [timing(b, edge_ms, 2 * edge_ms, logits, logits, 2.0 * seq * hidden * vocab / tp)
                        for b in micro_batch_sizes]))
    spec = None
    if with_spec:
        spec = {"name": "synthetic", "num_layers": blocks, "hidden_size": hidden, "num_heads": heads,
                "ffn_hidden_size": 4 * hidden, "vocab_size": vocab, "seq_len": seq, "num_kv_heads": None,
                "tied_embeddings": tied, "norm": "layernorm", "mlp": "gelu", "position": "learned"}
    return Profile(
        model="synthetic", source="analytic", device="test", device_name="test", dtype=dtype, seq_len=seq,
        micro_batch_sizes=tuple(micro_batch_sizes), tp=tp, spec=spec,
        layers=tuple(
            LayerProfile(index=i, name=f"{role}.{i}", kind=kind, role=role, param_count=params,
                         param_bytes=params * e, timings=tuple(ts))
            for i, (role, kind, params, ts) in enumerate(layers)
        ),
    )


def synthetic_gpu(**changes) -> GPU:
    base = dict(name="TestGPU-80GB", peak_bf16_tflops=989.0, peak_fp16_tflops=989.0, peak_fp32_tflops=67.0,
                memory_gib=80.0, hbm_gbps=3350.0)
    base.update(changes)
    return GPU(**base)


def synthetic_cluster(num_gpus: int = 8, *, gpus_per_node: int = 8, intra_gbps: float = 450.0,
                      inter_gbps: float = 50.0, intra_us: float = 5.0, inter_us: float = 10.0, **gpu) -> Cluster:
    nodes = max(1, -(-num_gpus // gpus_per_node))
    return Cluster(name=f"test-{num_gpus}", gpu=synthetic_gpu(**gpu), gpus_per_node=min(gpus_per_node, num_gpus),
                   num_nodes=nodes, intra_node_gbps=intra_gbps, inter_node_gbps=inter_gbps,
                   intra_node_latency_us=intra_us, inter_node_latency_us=inter_us)




@pytest.fixture
def make_profile():
    return synthetic_profile


@pytest.fixture
def make_cluster():
    return synthetic_cluster


@pytest.fixture
def skipped_rows(monkeypatch):
    """Run the batched simulator through numpy only and record, per periodicity check, how many rows left there."""
    from pptune.cost import sim_batch

    left: list[int] = []
    real_skip = sim_batch._skip

    def counting(*args):
        done = real_skip(*args)
        left.append(int(done.sum()))
        return done

    monkeypatch.setattr(sim_batch, "_skip", counting)
    monkeypatch.setattr(sim_batch, "_LOOP_OPS_PER_LEVEL", 0)
    return left
