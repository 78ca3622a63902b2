"""Saved-for-backward bytes: exact counts for hand-computed modules, storage de-duplication, parameters left out."""

from __future__ import annotations

import torch
from torch import nn

from pptune.profile.saved_bytes import SavedBytesCounter, saved_bytes

F32 = 4


def test_linear_then_gelu_saves_its_input_and_the_pre_activation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU())
    x = torch.randn(4, 64, requires_grad=True)
    nbytes, out = saved_bytes(model, x, exclude=list(model.parameters()))
    # addmm saves its input x [4, 64] (for the weight gradient) and W^T (a parameter: left out);
    # GELU saves its input, the Linear's output [4, 128]. Nothing else.
    assert nbytes == 4 * 64 * F32 + 4 * 128 * F32 == 3072
    assert out.shape == (4, 128)


def test_parameters_are_counted_only_when_not_excluded():
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU())
    x = torch.randn(4, 64, requires_grad=True)
    nbytes, _ = saved_bytes(model, x)
    assert nbytes == 3072 + 128 * 64 * F32  # the weight is saved too (for the input gradient)


def test_input_without_grad_is_still_saved_for_the_weight_gradient():
    model = nn.Linear(64, 128)
    nbytes, _ = saved_bytes(model, torch.randn(3, 64), exclude=list(model.parameters()))
    assert nbytes == 3 * 64 * F32


def test_one_storage_saved_twice_or_through_views_counts_once():
    x = torch.randn(8, 64, requires_grad=True)
    nbytes, _ = saved_bytes(lambda t: t * t, x)  # mul saves self and other: the same tensor
    assert nbytes == 8 * 64 * F32
    nbytes, _ = saved_bytes(lambda t: t[:, :32] * t[:, 32:], x)  # two views of one storage: the whole storage
    assert nbytes == 8 * 64 * F32


def test_no_grad_saves_nothing_and_counter_reports_storages():
    counter = SavedBytesCounter()
    x = torch.randn(4, 4, requires_grad=True)
    with counter.counting():
        with torch.no_grad():
            _ = x * x
        y = x.exp()  # exp saves its result
    assert counter.num_storages == 1 and counter.nbytes == 4 * 4 * F32
    counter.release()
    assert y.requires_grad
