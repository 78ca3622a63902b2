"""Bytes autograd keeps alive for backward, counted with ``torch.autograd.graph.saved_tensors_hooks``.

Every tensor an autograd node saves passes through the pack hook. Several saves can share one
storage (``x * x`` saves ``x`` twice; a view saves its base's storage), so storages are counted
once, by ``untyped_storage().data_ptr()``, at their full ``nbytes()`` (a saved view keeps the whole
storage alive). Storages of the layer's own parameters and buffers are left out: they are the model's
state, counted as weights (``param_bytes``), and they stay in memory whether or not backward runs.
The layer's input is counted when an op saves it (e.g. the first norm saves its input): that is the
activation a stage must keep until the micro-batch's backward, as in Korthikanti et al. (MLSys'23).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch


class SavedBytesCounter:
    """Collects the distinct storages saved for backward inside ``counting()``; ``nbytes`` sums them."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._excluded = {_storage_key(t) for t in exclude}
        self._storages: dict[tuple[str, int], int] = {}
        self._held: list[torch.Tensor] = []  # keep saved tensors alive so no data_ptr is reused while counting

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key is not None and key not in self._excluded and key not in self._storages:
            self._storages[key] = tensor.untyped_storage().nbytes()
            self._held.append(tensor)
        return tensor

    @contextlib.contextmanager
    def counting(self) -> Iterator[SavedBytesCounter]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor):
            yield self

    @property
    def nbytes(self) -> int:
        return sum(self._storages.values())

    @property
    def num_storages(self) -> int:
        return len(self._storages)

    def release(self) -> None:
        """Drop the references held while counting (the totals stay)."""
        self._held.clear()


def _storage_key(tensor: torch.Tensor) -> tuple[str, int] | None:
    """(device, storage address), or None for tensors without a real storage (meta, empty, wrapper subclasses)."""
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None
    ptr = storage.data_ptr()
    if ptr == 0 or tensor.device.type == "meta":
        return None
    return (str(tensor.device), ptr)


def saved_bytes(fn: Callable[..., object], *args: torch.Tensor, exclude: Iterable[torch.Tensor] = ()) -> tuple[int, object]:
    """Run ``fn(*args)`` once and return (bytes autograd saved for its backward, its output).

    Args:
        fn: the forward to measure (a layer, or a layer followed by a loss).
        args: its inputs.
        exclude: tensors whose storages are not activations (the layer's parameters and buffers).
    """
    counter = SavedBytesCounter(exclude)
    with counter.counting():
        out = fn(*args)
    counter.release()
    return counter.nbytes, out
