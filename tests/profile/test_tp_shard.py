"""Profiles at tp > 1: one rank's shard of pptune's tp layers, timed with their collectives left out."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from pptune.errors import ConfigError
from pptune.profile.measure import profile_model
from pptune.runtime.tp_comm import TensorParallel, all_reduce_, enter_tp, exit_tp

TINY = "gpt:layers=2,hidden=64,heads=2,vocab=130,seq=16"
FAST = {"warmup": 5, "repeat": 2, "progress": False, "threads": 1}


@pytest.fixture(scope="module")
def profiles():
    return {tp: profile_model(TINY, seq_len=16, micro_batch_sizes=[2], tp=tp, **FAST) for tp in (1, 2)}


def test_a_tp_2_profile_holds_one_ranks_shard(profiles):
    one, two = profiles[1], profiles[2]
    assert (one.tp, two.tp) == (1, 2) and [x.role for x in two.layers] == [x.role for x in one.layers]
    blocks = [(a.param_count, b.param_count) for a, b in zip(one.layers, two.layers, strict=True) if a.role == "block"]
    # column/row-parallel weights and biases halve; the norms and the row-parallel output bias stay whole
    assert all(full / 2 < shard < 0.52 * full for full, shard in blocks)
    # the vocabulary split 65 + 65 of 130 rows; the learned positions and the final norm (tied head) stay whole
    assert two.layers[0].param_count == 65 * 64 + 16 * 64 + 2 * 64
    head_out = two.layers[-1].timings[0].output_bytes
    assert head_out == 2 * 16 * 65 * 4  # vocab-parallel logits of one rank, fp32
    assert all(t.fwd_ms > 0 and t.bwd_ms > 0 for layer in two.layers for t in layer.timings)


def test_compute_only_collectives_talk_to_nobody():
    import torch

    assert not dist.is_initialized()  # any real collective here would raise
    tp = TensorParallel(size=2, rank=1, compute_only=True, sequence_parallel=True)
    x = torch.arange(8.0).reshape(1, 4, 2).requires_grad_()
    gathered = enter_tp(x, tp)  # sequence gathered: two copies of this rank's part
    assert gathered.shape == (1, 8, 2)
    scattered = exit_tp(gathered, tp)  # this rank's half of the sequence
    assert scattered.shape == (1, 4, 2)
    scattered.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    y = torch.ones(3)
    all_reduce_(y, tp)
    assert y.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(("model", "tp", "message"), [
    ("gpt:layers=2,hidden=64,heads=2,vocab=130,seq=16", 3, "num_heads 2 is not divisible by tp 3"),
    ("hf:gpt2?n_layer=1", 2, "need a preset or spec model"),
])
def test_a_model_tp_cannot_split_is_refused(model, tp, message):
    with pytest.raises(ConfigError, match=message):
        profile_model(model, seq_len=16, micro_batch_sizes=[1], tp=tp, **FAST)
