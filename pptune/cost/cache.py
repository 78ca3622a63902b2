"""CostCache: every cache of the cost model in one object, owned by its caller (the planner's evaluator, a
benchmark, a test), with one ``clear()`` and its size limits in one table (``LIMITS``).

The cost model keeps structure and per-stage work, never a configuration's result: layer tables and their
arrays, stage splits, schedule orders and their compiled forms (steady states, unions of shapes), per-stage
terms and link tables, and simulated pipelines (which configurations differing only in dp, ZeRO or target
share). Keys are contents: a profile by its fingerprint (a digest of its fields), a cluster
by its own value (a frozen dataclass compares and hashes by its fields), layer tables by the fingerprint and
shape they were built from, schedules by ``(schedule, pp, m, vpp)``. Two equal profiles share entries; a
changed cluster never reads another's.

A function called without a cache makes its own for that call (correct, just without reuse across calls).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Entries per store; a full store is emptied before the next entry (the planner asks for the same few keys again
# and again, so recency bookkeeping would cost more than it saves).
LIMITS: dict[str, int] = {
    "fingerprints": 64,  # object id -> (the object, its digest): spares re-hashing a profile on every call
    "tables": 512,  # (profile digest, micro-batch size, tp, dtype, sequence parallel) -> LayerTable
    "table_arrays": 512,  # LayerTable key -> TableArrays
    "stacks": 256,  # the distinct tables of a group -> their stacked arrays
    "splits": 65536,  # (profile digest, partition, pp, vpp, micro-batch size, tp, dtype, sp, recompute) -> bounds
    "ds_uniform": 4096,
    "ds_balanced": 4096,
    "ds_cuts": 256,
    "min_max_split": 4096,
    "type_weights": 256,
    "run_sums": 256,
    "stage_orders": 1024,  # (schedule, pp, m, vpp) -> each stage's op order
    "order_arrays": 256,
    "compiled": 256,  # (schedule, pp, m, vpp) -> CompiledSchedule
    "event_rows": 64,
    "steady": 256,
    "family": 256,
    "unions": 16,
    "pipelines": 8192,  # (shape, durations, timeline) -> ScheduleResult of the event-driven simulator  # a union of big shapes holds a few MB of indices
    "inflight": 4096,
    "tp_stages": 4096,  # (cluster, tp, dp, pp, message bytes, sp) -> TP collectives per stage
    "gather_links": 4096,
    "p2p_links": 4096,
    "cp_ring": 4096,  # (table key, tp, cp, dp, pp, cluster) -> context-parallel ring time per layer and stage link
    "stage_terms": 65536,
}


class CostCache:
    """Named stores of cost-model work, each bounded by ``LIMITS``."""

    __slots__ = ("_stores",)

    def __init__(self) -> None:
        self._stores: dict[str, dict] = {name: {} for name in LIMITS}

    def get(self, store: str, key: Any, build: Callable[[], T]) -> T:
        """The value kept under ``key`` in ``store``, built (and kept) on the first request."""
        entries = self._stores[store]
        try:
            return entries[key]
        except KeyError:
            pass
        value = build()
        if len(entries) >= LIMITS[store]:
            entries.clear()
        entries[key] = value
        return value

    def fingerprint(self, obj: Any) -> str:
        """A digest of ``obj``'s content (its ``repr``: every field of a frozen dataclass), once per object."""
        entries = self._stores["fingerprints"]
        hit = entries.get(id(obj))
        if hit is not None and hit[0] is obj:  # the object is held, so its id cannot be reused meanwhile
            return hit[1]
        digest = hashlib.sha256(repr(obj).encode()).hexdigest()
        if len(entries) >= LIMITS["fingerprints"]:
            entries.clear()
        entries[id(obj)] = (obj, digest)
        return digest

    def clear(self, *stores: str) -> None:
        """Empty the named stores, or every store when none is named (what a fresh process starts with)."""
        for name in stores or self._stores:
            self._stores[name].clear()

    def sizes(self) -> dict[str, int]:
        """Entries per store."""
        return {name: len(entries) for name, entries in self._stores.items()}
