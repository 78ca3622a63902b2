"""A small synthetic profile of the tiny GPT the local runs train (for validation, calibration and tune tests)."""

from __future__ import annotations

from pptune.profile.schema import LayerProfile, LayerTiming, Profile

TINY = "gpt:layers=2,hidden=64,heads=2,seq=32,vocab=128"
TINY_SPEC = {"name": TINY, "num_layers": 4, "hidden_size": 64, "num_heads": 2, "ffn_hidden_size": 256,
             "vocab_size": 128, "seq_len": 32, "num_kv_heads": None, "tied_embeddings": True, "norm": "layernorm",
             "mlp": "gelu", "position": "learned"}


def small_profile(*, blocks: int = 4, block_ms: float = 2.0, head_ms: float = 6.0,
                  sizes: tuple[int, ...] = (1, 2, 4, 8, 16)) -> Profile:
    """Embedding, ``blocks`` blocks and a head three blocks heavy; times linear in the micro-batch size."""
    hidden, seq = 64, 32

    def timings(fwd: float) -> tuple[LayerTiming, ...]:
        return tuple(LayerTiming(micro_batch_size=b, fwd_ms=fwd * b, bwd_ms=2 * fwd * b, saved_bytes=4096 * b,
                                 output_bytes=seq * hidden * 4 * b) for b in sizes)

    layers = [LayerProfile(index=0, name="embedding", kind="EmbeddingPipe", role="embedding", param_count=10_000,
                           param_bytes=40_000, timings=timings(0.1))]
    for i in range(blocks):
        layers.append(LayerProfile(index=i + 1, name=f"block.{i}", kind="TransformerBlockPipe", role="block",
                                   param_count=50_000, param_bytes=200_000, timings=timings(block_ms)))
    layers.append(LayerProfile(index=blocks + 1, name="head", kind="HeadPipe", role="head", param_count=128,
                               param_bytes=512, timings=timings(head_ms)))
    spec = dict(TINY_SPEC, num_layers=blocks)
    return Profile(model=TINY, source="measured", device="cpu", device_name="test", dtype="fp32", seq_len=seq,
                   micro_batch_sizes=sizes, layers=tuple(layers), threads=1, spec=spec)
