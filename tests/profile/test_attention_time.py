"""The attention-core time: only the kernels SDPA dispatches to are timed, inside an ordinary forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pptune.model.layers import build_layers
from pptune.model.spec import parse_spec
from pptune.profile.attention_time import attention_fwd_ms
from pptune.profile.measure_layer import measure_layer
from pptune.profile.timing import CpuTimer


class _CountingTimer(CpuTimer):
    def __init__(self) -> None:
        self.calls = 0

    def time(self, fn):
        self.calls += 1
        return super().time(fn)


def test_only_attention_kernels_are_timed():
    q = torch.randn(2, 4, 128, 32, requires_grad=True)

    def fused():
        return F.scaled_dot_product_attention(q, q, q, is_causal=True).sum() + (q @ q.transpose(-1, -2)).sum()

    def eager():  # the same attention from matmuls and a softmax: no SDPA kernel, so no time
        scores = (q @ q.transpose(-1, -2)) / 32**0.5
        return (scores.softmax(-1) @ q).sum()

    timer = _CountingTimer()
    assert attention_fwd_ms(fused, timer, repeat=3) > 0
    assert timer.calls == 4  # one probing call, then three timed ones: the matmul and the sums run untimed
    timer = _CountingTimer()
    assert attention_fwd_ms(eager, timer, repeat=3) == 0.0
    assert timer.calls == 0


def test_a_measured_block_records_its_attention_share():
    torch.manual_seed(0)
    spec = parse_spec("gpt:layers=1,hidden=64,heads=4,seq=128,vocab=500")
    embedding, block = build_layers(spec)[:2]
    x = torch.randint(0, 500, (2, 128))
    emb = measure_layer(embedding, x, micro_batch_size=2, timer=CpuTimer(), warmup=1, repeat=3)
    blk = measure_layer(block, emb.output, micro_batch_size=2, timer=CpuTimer(), warmup=1, repeat=3)
    assert emb.timing.attn_fwd_ms == 0.0
    assert 0.0 < blk.timing.attn_fwd_ms <= blk.timing.fwd_ms
