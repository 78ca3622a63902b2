"""estimate_many(): what estimate() predicts, for thousands of configurations at once (the exhaustive planner's path).

Configurations are grouped by pipeline shape (pp, vpp; tp and dp vary by row); a group's chunk and stage costs
are numpy arrays (``pptune.cost.bulk_chunks``), computed once per row that differs in more than its ZeRO stage;
the pipelines of all groups are pooled by schedule shape, duplicate rows removed, and simulated together
(``pptune.cost.sim_batch``, where shapes differing only in micro-batch count share one run); the per-stage
terms that depend only on (layer table, boundaries, ZeRO, target, dtype, dp) -- parameters, DP
synchronisation, optimizer step, model-state memory -- are computed once with estimate()'s own helpers.
Caches kept across calls hold structure and per-stage work, never a configuration's result: layer tables (and
stacks of them), splits, compiled schedules (and unions of them), per-stage terms, link costs per (tp, dp, stage).
The arithmetic follows estimate() operation by operation, so the figures agree within 1e-9 relative
(``tests/cost/test_bulk.py`` checks it on random configurations: a change to estimate() must be made here too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import SimpleNamespace

import numpy as np

from pptune.cost import comm
from pptune.cost.bulk_chunks import GroupChunks, group_chunks, table_arrays
from pptune.cost.bulk_terms import stage_terms
from pptune.cost.checks import check_config
from pptune.cost.chunks import BLOCKING_SENDS
from pptune.cost.estimate import _model_flops
from pptune.cost.layers import LayerTable, layer_table
from pptune.cost.memory import (
    RESERVE_FIXED_BYTES,
    RESERVE_FRACTION,
    inflight_units,
)
from pptune.cost.partition import stage_boundaries
from pptune.cost.schedule import W_SHARE_OF_BACKWARD
from pptune.cost.sim_batch import BatchSchedule, simulate_batches
from pptune.cost.types import Breakdown, EstimateSummary, positional_constructor
from pptune.errors import PptuneError
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile

_OK = object()
# Thousands of results per call: positional constructors (fields in order; a test checks the order).
_SUMMARY = positional_constructor(EstimateSummary)
_BREAKDOWN = positional_constructor(Breakdown)


def estimate_many(profile: Profile | Mapping[int, Profile], cluster: Cluster,
                  configs: Iterable[ParallelConfig]) -> list[EstimateSummary | PptuneError]:
    """Predict every configuration of ``configs``; each entry is a summary or the error estimate() would raise.

    Args:
        profile: per-layer costs: one profile for every configuration (as ``estimate(profile, ...)``), or one
            per tp degree (``{tp: profile}``; configurations of all degrees then share the pooled simulations).
        cluster: GPUs and links.
        configs: the configurations (any mix of layouts, schedules, ZeRO stages, targets).
    """
    configs = list(configs)
    profiles = profile if isinstance(profile, Mapping) else None
    out: list = [None] * len(configs)
    checked: dict[tuple, object] = {}
    splits: dict[tuple, object] = {}
    interned: dict[tuple[int, ...], tuple[int, ...]] = {}
    groups: dict[tuple, tuple[list[int], list[tuple[int, ...]]]] = {}
    for i, c in enumerate(configs):
        prof = profile if profiles is None else profiles[c.tp]
        key = (c.tp, c.pp, c.dp, c.vpp, c.schedule, c.num_microbatches)
        verdict = checked.get(key)
        if verdict is None:
            verdict = checked[key] = _try(lambda c=c, prof=prof: check_config(prof, cluster, c))
        if verdict is not _OK:
            out[i] = verdict
            continue
        key = (c.partition, c.pp, c.vpp, c.micro_batch_size, c.tp, c.dtype, c.sequence_parallel, c.recompute)
        bounds = splits.get(key)
        if bounds is None:
            bounds = _split(prof, c, key)
            if isinstance(bounds, tuple):  # one object per distinct split: later keys use its identity
                bounds = interned.setdefault(bounds, bounds)
            splits[key] = bounds
        if isinstance(bounds, PptuneError):
            out[i] = bounds
            continue
        group = groups.get((c.pp, c.vpp))
        if group is None:
            group = groups[(c.pp, c.vpp)] = ([], [])
        group[0].append(i)
        group[1].append(bounds)
    pool = _SimPool()
    prepared = [_Group(profile if profiles is None else profiles, cluster, [configs[i] for i in idx], bounds, idx, pool)
                for idx, bounds in groups.values()]
    pool.run()
    for group in prepared:
        for i, summary in zip(group.indices, group.finish(pool), strict=True):
            out[i] = summary
    return out


_SPLITS: dict[tuple, tuple[Profile, object]] = {}


def _split(profile: Profile, config: ParallelConfig, key: tuple) -> object:
    """stage_boundaries (or its error), kept across calls per profile object like the layer tables."""
    hit = _SPLITS.get((id(profile), *key))
    if hit is not None and hit[0] is profile:
        return hit[1]
    bounds = _try(lambda: stage_boundaries(profile, config), value=True)
    if len(_SPLITS) >= 65536:
        _SPLITS.clear()
    _SPLITS[(id(profile), *key)] = (profile, bounds)
    return bounds


def _try(fn, *, value: bool = False):
    try:
        result = fn()
    except PptuneError as exc:
        return exc
    return result if value else _OK


class _SimPool:
    """Pipelines to simulate, by shape (schedule, pp, m, vpp), each distinct duration set once."""

    def __init__(self) -> None:
        self.rows: dict[tuple, list[np.ndarray]] = {}  # shape -> blocks of distinct rows (fwd | bwd | w | p2p)
        self.count: dict[tuple, int] = {}
        self.index: dict[tuple, dict[bytes, int]] = {}
        self.results: dict[tuple, BatchSchedule] = {}

    def add(self, shape: tuple, rows: np.ndarray) -> np.ndarray:
        """Pool index of every row of ``rows`` (K, columns); rows seen before are not added again."""
        rows = np.ascontiguousarray(rows)
        raw, width = rows.tobytes(), rows.dtype.itemsize * rows.shape[1]
        seen = self.index.setdefault(shape, {})
        count = self.count.get(shape, 0)
        where = []
        new = []
        for i in range(len(rows)):  # a dict of the rows' bytes: cheaper than sorting them (np.unique)
            key = raw[i * width:(i + 1) * width]
            j = seen.get(key)
            if j is None:
                j = seen[key] = count
                count += 1
                new.append(i)
            where.append(j)
        if new:
            self.rows.setdefault(shape, []).append(rows[new] if len(new) < len(rows) else rows)
        self.count[shape] = count
        return np.array(where, dtype=np.int64)

    def run(self) -> None:
        items = []
        for shape, blocks in self.rows.items():
            schedule, pp, _, vpp = shape
            rows = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
            chunks = pp * vpp
            fwd, bwd = rows[:, :chunks], rows[:, chunks:2 * chunks]
            w = rows[:, 2 * chunks:3 * chunks] if schedule == "zb_h1" else None
            items.append((*shape, fwd, bwd, rows[:, rows.shape[1] - (chunks - 1):], w))
        self.results = dict(zip(self.rows, simulate_batches(items), strict=True))


class _Group:
    """K configurations of one pipeline shape (pp, vpp; any tp and dp): arrays built before the pooled
    simulation, summaries after it. One group per shape rather than per layout: the numpy work per group
    costs about as much for 10 rows as for 500."""

    def __init__(self, profile: Profile | Mapping[int, Profile], cluster: Cluster, configs: list[ParallelConfig],
                 bounds: list[tuple[int, ...]], indices: list[int], pool: _SimPool) -> None:
        self.cluster, self.configs, self.bounds, self.indices = cluster, configs, bounds, indices
        tables: dict[tuple, int] = {}
        self.distinct_tables: list[LayerTable] = []  # and per row its index into them (table_index)
        self.table_config: list[ParallelConfig] = []  # a configuration of each distinct table
        table_index = []
        for c in configs:
            key = (c.tp, c.micro_batch_size, c.dtype, c.sequence_parallel)
            j = tables.get(key)
            if j is None:
                prof = profile[c.tp] if isinstance(profile, Mapping) else profile
                j = tables[key] = len(self.distinct_tables)
                self.table_config.append(c)
                self.distinct_tables.append(layer_table(prof, micro_batch_size=c.micro_batch_size, tp=c.tp,
                                                        dtype=c.dtype, sequence_parallel=c.sequence_parallel))
            table_index.append(j)
        self.table_index = np.array(table_index)
        row_tables = [self.distinct_tables[j] for j in table_index]
        self.tables = row_tables
        self.seq_len = (next(iter(profile.values())) if isinstance(profile, Mapping) else profile).seq_len
        # Chunk costs and pipelines do not depend on the ZeRO stage: compute them once per representative row
        # (every field group_chunks reads; the table stands for micro-batch size, dtype, sequence parallelism).
        reps: dict[tuple, int] = {}
        inverse, rep = [], []
        for i, (c, t, b) in enumerate(zip(configs, row_tables, bounds, strict=True)):
            key = (id(t), id(b), c.recompute, c.tp, c.dp, c.schedule, c.num_microbatches, c.target)
            j = reps.get(key)
            if j is None:
                j = reps[key] = len(rep)
                rep.append(i)
            inverse.append(j)
        self.inverse = np.array(inverse)
        self.rep_configs = [configs[i] for i in rep]
        self.chunks: GroupChunks = group_chunks(self.rep_configs, [table_arrays(row_tables[i]) for i in rep],
                                                np.array([bounds[i] for i in rep]), cluster, seq_len=self.seq_len,
                                                w_share=W_SHARE_OF_BACKWARD)
        ch = self.chunks
        shapes: dict[tuple, list[int]] = {}
        for i, c in enumerate(self.rep_configs):
            shapes.setdefault((c.schedule, c.pp, c.num_microbatches, c.vpp), []).append(i)
        self.shapes = {shape: (idx, self.rep_configs[idx[0]]) for shape, idx in shapes.items()}
        # Per shape: the representative rows, their pipelines with p2p (sim) and without (bare: the bubble).
        self.sim: list[tuple[tuple, np.ndarray, np.ndarray]] = []
        self.bare: list[tuple[tuple, np.ndarray, np.ndarray]] = []
        blocking = np.array([c.target in BLOCKING_SENDS for c in self.rep_configs])
        for shape, idx in shapes.items():
            rows = np.array(idx)
            parts = [ch.fwd_ms[rows], ch.bwd_ms[rows]]
            if shape[0] == "zb_h1":
                parts.append(ch.weight_grad_ms[rows])
            p2p = ch.p2p_ms[rows]
            sends = blocking[rows]
            if p2p.any() and sends.any():  # the send is the sender's work (chunks.blocking_sends), no lag
                sent = [parts[0].copy(), parts[1].copy(), *parts[2:]]
                sent[0][sends, :-1] += p2p[sends]
                sent[1][sends, 1:] += p2p[sends]
                lags = np.where(sends[:, None], 0.0, p2p)
                self.sim.append((shape, rows, pool.add(shape, np.concatenate([*sent, lags], axis=1))))
            else:
                self.sim.append((shape, rows, pool.add(shape, np.concatenate([*parts, p2p], axis=1))))
            if p2p.any():
                self.bare.append((shape, rows, pool.add(shape, np.concatenate([*parts, np.zeros_like(p2p)], axis=1))))
            else:
                self.bare.append(self.sim[-1])

    def finish(self, pool: _SimPool) -> list[EstimateSummary]:
        configs, ch, cluster = self.configs, self.chunks, self.cluster
        k, pp, inv = len(configs), configs[0].pp, self.inverse
        reps = len(self.rep_configs)
        step, end, bubble = (x[inv] for x in _gather(pool, self.sim, reps, pp, ("step_ms", "end_ms", "bubble_fraction")))
        bare_step, busy = (x[inv] for x in _gather(pool, self.bare, reps, pp, ("step_ms", "busy_ms")))
        crit = busy.argmax(axis=1)  # the first busiest stage, as max(range(pp), key=...) picks
        # Per-stage terms of each distinct (tp, boundaries, ZeRO, target, dtype, dp), spread over the rows.
        distinct: dict[tuple, int] = {}
        which = np.empty(k, dtype=np.int64)
        states = []
        for i, (t, b, c) in enumerate(zip(self.tables, self.bounds, configs, strict=True)):
            # The terms depend on the table's parameters (the same for every table of one tp), not its micro-batch
            # size; b is one object per distinct split (estimate_many interns them).
            key = (c.tp, id(b), c.zero_stage, c.target, c.dtype, c.dp)
            j = distinct.get(key)
            if j is None:
                j = distinct[key] = len(states)
                states.append(stage_terms(t, b, c, cluster))
            which[i] = j
        times = np.stack([s.times for s in states])[which]  # (K, 2, pp): extra, sync
        extra, sync = times[:, 0], times[:, 1]
        m = np.array([c.num_microbatches for c in configs])
        if any(c.zero_stage >= 2 for c in configs):  # the same per-element arithmetic as estimate._dp_tail
            for i, c in enumerate(configs):
                st = states[which[i]].sync
                for s in range(pp):
                    sync[i, s] = sync[i, s] + comm.zero_exposed_ms(
                        st.zero_reduce_ms[s], st.zero_gather_ms[s], zero_stage=c.zero_stage,
                        num_microbatches=c.num_microbatches, busy_ms=float(busy[i, s]))
        tail = np.maximum(((end + extra) + sync).max(axis=1), step)
        vpp = configs[0].vpp
        parts = {
            "compute_ms": ch.compute_ms[inv, crit], "bubble_ms": bare_step - busy[np.arange(k), crit],
            "pp_comm_ms": step - bare_step, "tp_comm_ms": ch.tp_comm_ms[inv, crit], "dp_comm_ms": tail - step,
            "optimizer_ms": np.array([s.optimizer_ms for s in states])[which],
            "overhead_ms": cluster.per_microbatch_overhead_ms * m * vpp + cluster.per_step_overhead_ms,
        }
        total = parts["compute_ms"]
        for name in list(parts)[1:]:  # Breakdown.step_ms adds the parts left to right
            total = total + parts[name]
        memory, activations = self._memory(np.stack([s.states for s in states])[which])
        peak = memory.max(axis=1)
        gbs = np.array([c.global_batch_size for c in configs])
        samples = gbs / (total / 1e3)
        flops = self._unit_flops() * m * np.array([c.dp for c in configs])
        tflops = flops / np.array([c.world_size for c in configs]) / (total / 1e3) / 1e12
        gpu = cluster.gpu
        by_dtype = {d: gpu.peak_tflops(d) for d in {c.dtype for c in configs}}
        peaks = np.array([by_dtype[c.dtype] for c in configs])
        limit = gpu.memory_bytes
        seq_len = self.seq_len
        over = peak > limit
        reasons: list[str | None] = [None] * k
        rows = np.flatnonzero(over)
        if len(rows):
            worst = memory[rows].argmax(axis=1)  # the first stage with the peak
            tail = f" GiB > {limit / 2**30:.1f} GiB of a {gpu.name} (activations "
            for i, w, pk, act in zip(rows.tolist(), worst.tolist(), peak[rows].tolist(),
                                     activations[rows, worst].tolist(), strict=True):
                reasons[i] = f"stage {w} needs {pk / 2**30:.1f}{tail}{int(act) / 2**30:.1f} GiB)"
        # map() over columns: the per-row work is only the two constructors.
        breakdowns = map(_BREAKDOWN, *(v.tolist() for v in parts.values()))
        return list(map(_SUMMARY, total.tolist(), breakdowns, samples.tolist(), (samples * seq_len).tolist(),
                        tflops.tolist(), (tflops / peaks).tolist(), bubble.tolist(), peak.tolist(),
                        map(tuple, memory.tolist()), (~over).tolist(), reasons, self.bounds))

    def _unit_flops(self) -> np.ndarray:
        """(K,) model FLOPs of one micro-batch and one replica, once per layer table (micro-batch size)."""
        per_table = np.array([_unit_flops(t, c, self.seq_len)
                              for t, c in zip(self.distinct_tables, self.table_config, strict=True)])
        return per_table[self.table_index]

    def _memory(self, states_sum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, pp) totals as memory.stage_memory adds its parts, and the activations part."""
        configs, ch, inv = self.configs, self.chunks, self.inverse
        units = np.empty((len(self.rep_configs), configs[0].pp), dtype=np.int64)
        for rows, config in self.shapes.values():
            units[rows] = _units(config)
        activations = (units * ch.kept_bytes)[inv]
        logits = np.zeros_like(activations)
        head_stage = ch.head_stage[inv]
        heads = np.flatnonzero(head_stage >= 0)
        if len(heads):  # the head stage's fp32 logits (two copies in a measured profile), once per table
            per_table = np.array([0 if t.head_index is None else
                                  round((1 if t.profile_source == "analytic" else 2) * t.output_bytes[t.head_index] * 4
                                        / t.act_bytes) for t in self.distinct_tables], dtype=np.int64)
            logits[heads, head_stage[heads]] = per_table[self.table_index[heads]]
        parts = states_sum + activations + ch.work_bytes[inv] + logits
        reserve = RESERVE_FIXED_BYTES + np.rint(RESERVE_FRACTION * parts).astype(np.int64)
        return parts + reserve, activations


def _gather(pool: _SimPool, refs: list[tuple[tuple, np.ndarray, np.ndarray]], k: int, pp: int,
            names: tuple[str, ...]) -> list[np.ndarray]:
    out = [np.empty((k, pp)) if name in ("end_ms", "busy_ms") else np.empty(k) for name in names]
    for shape, rows, idx in refs:
        res = pool.results[shape]
        for arr, name in zip(out, names, strict=True):
            arr[rows] = getattr(res, name)[idx]
    return out


_UNITS: dict[tuple, list[int]] = {}


def _units(config: ParallelConfig) -> list[int]:
    key = (config.schedule, config.pp, config.num_microbatches, config.vpp)
    if key not in _UNITS:
        _UNITS[key] = [inflight_units(config, s) for s in range(config.pp)]
    return _UNITS[key]


def _unit_flops(table: LayerTable, config: ParallelConfig, seq_len: int) -> float:
    """estimate._model_flops for one micro-batch and one replica: 3 * forward (the caller multiplies by m, dp)."""
    one = SimpleNamespace(tp=config.tp, micro_batch_size=config.micro_batch_size, num_microbatches=1, dp=1)
    return _model_flops(table, one, seq_len)  # type: ignore[arg-type]
