"""Vocabulary-parallel cross-entropy on one gloo rank: loss and logits gradient equal torch's cross-entropy."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.nn.functional as F

from pptune.runtime.tp_comm import TensorParallel
from pptune.runtime.tp_loss import VocabParallelLoss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vocab_parallel_loss_matches_cross_entropy_and_its_gradient() -> None:
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        tp = TensorParallel(size=1, rank=0)
        tp.bind(dist.new_group([0]))
        torch.manual_seed(0)
        logits = torch.randn(2, 3, 7, requires_grad=True)
        labels = torch.randint(0, 7, (2, 3))
        loss = VocabParallelLoss(tp, 7)(logits, labels)
        loss.backward()
        ref_logits = logits.detach().clone().requires_grad_(True)
        ref = F.cross_entropy(ref_logits.flatten(0, 1), labels.flatten())
        ref.backward()
        torch.testing.assert_close(loss, ref)
        torch.testing.assert_close(logits.grad, ref_logits.grad)  # the in-place backward still gives softmax - onehot
    finally:
        if owned:
            dist.destroy_process_group()
