"""The cost model's one kernel: K configurations of one pipeline shape (pp, vpp) from chunk costs to figures.

``RowGroup`` builds the per-chunk costs of its rows (``pptune.cost.chunks``), hands their pipelines to a
simulation pool and, once the pool has run, turns the simulated makespans into the additive Breakdown,
per-stage memory parts, throughput and feasibility (``RowFigures``). Two pools run the pipelines:

- ``BatchPool`` (``estimate_many``): every group's pipelines pooled by shape, duplicates removed, simulated
  together level by level (``pptune.cost.sim_batch``);
- ``EventPool`` (``estimate``): each pipeline through the event-driven simulator (``pptune.cost.schedule``),
  which also gives the timeline.

Everything but the simulation is the same code for both, so ``estimate()`` and ``estimate_many()`` can only
differ by their simulators; ``tests/cost/test_bulk.py`` uses the event loop as the oracle of the batched one.

The step's parts (``pptune.cost.types.Breakdown``):
- compute_ms / tp_comm_ms: the critical stage's (most busy) own compute and exposed TP collectives.
- bubble_ms: the rest of the pipeline makespan without p2p lags (warm-up, cool-down, imbalance waits).
- pp_comm_ms: what the p2p messages add to that makespan (lags; DeepSpeed's blocking messages hold sender and
  receiver instead, see ``pptune.cost.chunks.pipeline_schedule``).
- dp_comm_ms: the tail after the last backward: each stage reduces its gradients (and the tied embedding
  between first and last stage) once its own last op ends; the step waits for the slowest
  (``pptune.cost.dp_sync``).
- optimizer_ms: the slowest stage's optimizer step (``pptune.cost.stage_terms``).
- overhead_ms: ``per_microbatch_overhead_ms * m * vpp + per_step_overhead_ms`` (calibrated; 0 by default).
- cp_comm_ms: the critical stage's exposed context-parallel K,V ring (``pptune.cost.context_parallel``; 0 at cp 1).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pptune.cost import comm
from pptune.cost.cache import CostCache
from pptune.cost.chunks import GroupChunks, group_chunks, pipeline_schedule, table_arrays
from pptune.cost.layers import LayerTable, layer_table
from pptune.cost.memory import MEMORY_PARTS, inflight_units, logits_bytes, memory_parts
from pptune.cost.schedule import ScheduleResult, simulate
from pptune.cost.sim_batch import BatchSchedule, simulate_batches
from pptune.cost.stage_terms import StageTerms, stage_terms
from pptune.errors import ConfigError
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile

BREAKDOWN_PARTS = ("compute_ms", "bubble_ms", "pp_comm_ms", "tp_comm_ms", "dp_comm_ms", "optimizer_ms", "overhead_ms",
                   "cp_comm_ms")


def overhead_units(config: ParallelConfig) -> int:
    """What the cluster's ``per_microbatch_overhead_ms`` is multiplied by: one per chunk and micro-batch."""
    return config.num_microbatches * config.vpp


def model_flops(table: LayerTable, config: ParallelConfig, seq_len: int) -> float:
    """Model FLOPs of one micro-batch of one replica, no recompute: 3x the forward (backward = 2x forward; Kaplan
    et al. 2020). The caller multiplies by the micro-batches and dp.

    The profile's ``fwd_flops`` are per GPU (sharded by tp), so a micro-batch's model forward is their sum
    times tp; when the profile has no FLOPs we use ``2 * N`` per token (N = parameters of the model).
    """
    fwd = sum(table.fwd_flops) * config.tp * config.cp  # a context-parallel table holds one rank's 1/cp
    if fwd <= 0:
        fwd = 2.0 * sum(table.param_count) * config.tp * config.micro_batch_size * seq_len
    return 3.0 * fwd


class BatchPool:
    """Pipelines to simulate, by shape (schedule, pp, m, vpp), each distinct duration set once."""

    def __init__(self, cache: CostCache) -> None:
        self.cache = cache
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
            rows = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
            items.append((*shape, *_split_row(shape, rows)))
        self.results = dict(zip(self.rows, simulate_batches(items, cache=self.cache), strict=True))


class EventPool:
    """Each pipeline through the event-driven simulator, in the order added (``runs`` keeps every ScheduleResult).

    ``timeline``: the first pipeline added (a group's simulated one, with its messages) also records its ops.
    """

    def __init__(self, cache: CostCache, *, timeline: bool = False) -> None:
        self.cache, self.timeline = cache, timeline
        self.rows: dict[tuple, list[np.ndarray]] = {}
        self.runs: list[ScheduleResult] = []
        self.results: dict[tuple, BatchSchedule] = {}

    def add(self, shape: tuple, rows: np.ndarray) -> np.ndarray:
        blocks = self.rows.setdefault(shape, [])
        start = sum(len(b) for b in blocks)
        blocks.append(rows)
        return np.arange(start, start + len(rows))

    def run(self) -> None:
        for shape, blocks in self.rows.items():
            schedule, pp, m, vpp = shape
            rows = np.concatenate(blocks)
            fwd, bwd, p2p, w = _split_row(shape, rows)
            runs = []
            for i in range(len(rows)):
                timeline = self.timeline and not self.runs and i == 0
                # Configurations that differ only in dp, ZeRO or target share a pipeline: simulate it once.
                key = (shape, rows[i].tobytes(), timeline)
                runs.append(self.cache.get("pipelines", key, functools.partial(
                    simulate, fwd[i].tolist(), bwd[i].tolist(), schedule=schedule, num_microbatches=m,
                    p2p_ms=p2p[i].tolist(), vpp=vpp, timeline=timeline, w_ms=None if w is None else w[i].tolist(),
                    cache=self.cache)))
            self.runs += runs
            self.results[shape] = BatchSchedule(
                step_ms=np.array([r.step_ms for r in runs]), busy_ms=np.array([r.busy_ms for r in runs]),
                end_ms=np.array([r.end_ms for r in runs]), bubble_fraction=np.array([r.bubble_fraction for r in runs]),
                peak_inflight=runs[0].peak_inflight)


def _split_row(shape: tuple, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(fwd, bwd, p2p, w or None) of pooled rows laid out as fwd | bwd | (w, zb_h1 only) | p2p."""
    schedule, pp, _, vpp = shape
    chunks = pp * vpp
    w = rows[:, 2 * chunks:3 * chunks] if schedule == "zb_h1" else None
    return rows[:, :chunks], rows[:, chunks:2 * chunks], rows[:, rows.shape[1] - (chunks - 1):], w


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class RowFigures:
    """The figures of a group's K rows: what Estimate and EstimateSummary hold, as arrays."""

    step_ms: np.ndarray  # (K,) the sum of the breakdown
    breakdown: dict[str, np.ndarray]  # BREAKDOWN_PARTS -> (K,)
    samples_per_s: np.ndarray
    tflops_per_gpu: np.ndarray
    mfu: np.ndarray
    bubble_fraction: np.ndarray
    memory_parts: dict[str, np.ndarray]  # MEMORY_PARTS -> (K, pp) int
    memory_bytes: np.ndarray  # (K, pp) int: each stage's total
    peak_memory_bytes: np.ndarray  # (K,)
    feasible: np.ndarray  # (K,) bool: the peak fits the GPU's memory
    infeasible_reasons: list[str | None]
    errors: list[ConfigError | None]  # a row whose figures are not finite and positive (inputs beyond what floats hold)


class RowGroup:
    """K configurations of one pipeline shape (pp, vpp; any tp and dp): arrays built before the pool runs, figures
    after it. One group per shape rather than per layout: the numpy work per group costs about as much for 10
    rows as for 500."""

    def __init__(self, profile: Profile | Mapping[int, Profile], cluster: Cluster, configs: list[ParallelConfig],
                 bounds: list[tuple[int, ...]], pool: BatchPool | EventPool) -> None:
        self.cluster, self.configs, self.bounds, self.cache = cluster, configs, bounds, pool.cache
        cache = pool.cache
        tables: dict[tuple, int] = {}
        self.distinct_tables: list[LayerTable] = []  # and per row its index into them (table_index)
        self.table_config: list[ParallelConfig] = []  # a configuration of each distinct table
        table_index = []
        for c in configs:
            key = (c.tp, c.micro_batch_size, c.dtype, c.sequence_parallel, c.cp)
            j = tables.get(key)
            if j is None:
                prof = profile[c.tp] if isinstance(profile, Mapping) else profile
                j = tables[key] = len(self.distinct_tables)
                self.table_config.append(c)
                self.distinct_tables.append(layer_table(prof, micro_batch_size=c.micro_batch_size, tp=c.tp,
                                                        dtype=c.dtype, sequence_parallel=c.sequence_parallel,
                                                        cp=c.cp, cache=cache))
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
            key = (id(t), id(b), c.recompute, c.tp, c.dp, c.cp, c.schedule, c.num_microbatches, c.target)
            j = reps.get(key)
            if j is None:
                j = reps[key] = len(rep)
                rep.append(i)
            inverse.append(j)
        self.inverse = np.array(inverse)
        self.rep_configs = [configs[i] for i in rep]
        self.chunks: GroupChunks = group_chunks(self.rep_configs, [table_arrays(row_tables[i], cache) for i in rep],
                                                np.array([bounds[i] for i in rep]), cluster, seq_len=self.seq_len,
                                                cache=cache)
        ch = self.chunks
        shapes: dict[tuple, list[int]] = {}
        for i, c in enumerate(self.rep_configs):
            shapes.setdefault((pipeline_schedule(c), c.pp, c.num_microbatches, c.vpp), []).append(i)
        self.shapes = {shape: (idx, self.rep_configs[idx[0]]) for shape, idx in shapes.items()}
        # Per shape: the representative rows, their pipelines with p2p (sim) and without (bare: the bubble).
        self.sim: list[tuple[tuple, np.ndarray, np.ndarray]] = []
        self.bare: list[tuple[tuple, np.ndarray, np.ndarray]] = []
        for shape, idx in shapes.items():
            rows = np.array(idx)
            parts = [ch.fwd_ms[rows], ch.bwd_ms[rows]]
            if shape[0] == "zb_h1":
                parts.append(ch.weight_grad_ms[rows])
            p2p = ch.p2p_ms[rows]  # lags, or DeepSpeed's blocking transfers (RENDEZVOUS_1F1B shapes)
            self.sim.append((shape, rows, pool.add(shape, np.concatenate([*parts, p2p], axis=1))))
            if p2p.any():
                self.bare.append((shape, rows, pool.add(shape, np.concatenate([*parts, np.zeros_like(p2p)], axis=1))))
            else:
                self.bare.append(self.sim[-1])

    def figures(self, pool: BatchPool | EventPool) -> RowFigures:
        """The rows' figures once ``pool`` has run."""
        configs, ch, cluster = self.configs, self.chunks, self.cluster
        k, pp, inv = len(configs), configs[0].pp, self.inverse
        reps = len(self.rep_configs)
        step, end, bubble = (x[inv] for x in _gather(pool, self.sim, reps, pp, ("step_ms", "end_ms", "bubble_fraction")))
        bare_step, busy = (x[inv] for x in _gather(pool, self.bare, reps, pp, ("step_ms", "busy_ms")))
        crit = busy.argmax(axis=1)  # the first busiest stage
        states, which = self._stage_terms()
        times = np.stack([s.times for s in states])[which]  # (K, 2, pp): tied all-reduce, DP sync
        extra, sync = times[:, 0], times[:, 1]
        m = np.array([c.num_microbatches for c in configs])
        if any(c.zero_stage >= 2 for c in configs):  # ZeRO-2/3's per-micro-batch traffic against the stage's work
            for i, c in enumerate(configs):
                st = states[which[i]].sync
                for s in range(pp):
                    sync[i, s] = sync[i, s] + comm.zero_exposed_ms(
                        st.zero_reduce_ms[s], st.zero_gather_ms[s], zero_stage=c.zero_stage,
                        num_microbatches=c.num_microbatches, busy_ms=float(busy[i, s]))
        tail = np.maximum(((end + extra) + sync).max(axis=1), step)
        units = np.array([overhead_units(c) for c in configs])
        parts = {
            "compute_ms": ch.compute_ms[inv, crit], "bubble_ms": bare_step - busy[np.arange(k), crit],
            "pp_comm_ms": step - bare_step, "tp_comm_ms": ch.tp_comm_ms[inv, crit], "dp_comm_ms": tail - step,
            "optimizer_ms": np.array([s.optimizer_ms for s in states])[which],
            "overhead_ms": cluster.per_microbatch_overhead_ms * units + cluster.per_step_overhead_ms,
            "cp_comm_ms": ch.cp_comm_ms[inv, crit],
        }
        total = parts["compute_ms"]
        for name in BREAKDOWN_PARTS[1:]:  # Breakdown.step_ms adds the parts left to right
            total = total + parts[name]
        memory = self._memory(np.stack([s.states for s in states])[which])
        totals = memory["weights"]
        for name in MEMORY_PARTS[1:]:
            totals = totals + memory[name]
        peak = totals.max(axis=1)
        gbs = np.array([c.global_batch_size for c in configs])
        samples = gbs / (total / 1e3)
        flops = self._unit_flops() * m * np.array([c.dp for c in configs])
        tflops = flops / np.array([c.world_size for c in configs]) / (total / 1e3) / 1e12
        gpu = cluster.gpu
        by_dtype = {d: gpu.peak_tflops(d) for d in {c.dtype for c in configs}}
        peaks = np.array([by_dtype[c.dtype] for c in configs])
        return RowFigures(step_ms=total, breakdown=parts, samples_per_s=samples, tflops_per_gpu=tflops,
                          mfu=tflops / peaks, bubble_fraction=bubble, memory_parts=memory, memory_bytes=totals,
                          peak_memory_bytes=peak, feasible=peak <= gpu.memory_bytes,
                          infeasible_reasons=self._reasons(totals, peak, memory["activations"]),
                          errors=_not_finite(total, tflops, parts))

    def _stage_terms(self) -> tuple[list[StageTerms], np.ndarray]:
        """Per-stage terms of each distinct (tp, boundaries, ZeRO, target, dtype, dp), and each row's index."""
        distinct: dict[tuple, int] = {}
        which = np.empty(len(self.configs), dtype=np.int64)
        states = []
        for i, (t, b, c) in enumerate(zip(self.tables, self.bounds, self.configs, strict=True)):
            # The terms depend on the table's parameters (the same for every table of one tp), not its micro-batch
            # size; b is one object per distinct split (estimate_many interns them).
            key = (c.tp, id(b), c.zero_stage, c.target, c.dtype, c.dp, c.cp, c.overlap_grad_reduce, c.overlap_param_gather)
            j = distinct.get(key)
            if j is None:
                j = distinct[key] = len(states)
                states.append(stage_terms(t, b, c, self.cluster, self.cache))
            which[i] = j
        return states, which

    def _reasons(self, totals: np.ndarray, peak: np.ndarray, activations: np.ndarray) -> list[str | None]:
        gpu = self.cluster.gpu
        limit = gpu.memory_bytes
        reasons: list[str | None] = [None] * len(self.configs)
        rows = np.flatnonzero(peak > limit)
        if len(rows):
            worst = totals[rows].argmax(axis=1)  # the first stage with the peak
            tail = f" GiB > {limit / 2**30:.1f} GiB of a {gpu.name} (activations "
            for i, w, pk, act in zip(rows.tolist(), worst.tolist(), peak[rows].tolist(),
                                     activations[rows, worst].tolist(), strict=True):
                reasons[i] = f"stage {w} needs {pk / 2**30:.1f}{tail}{int(act) / 2**30:.1f} GiB)"
        return reasons

    def _unit_flops(self) -> np.ndarray:
        """(K,) model FLOPs of one micro-batch and one replica, once per layer table (micro-batch size)."""
        per_table = np.array([model_flops(t, c, self.seq_len)
                              for t, c in zip(self.distinct_tables, self.table_config, strict=True)])
        return per_table[self.table_index]

    def _memory(self, states: np.ndarray) -> dict[str, np.ndarray]:
        """(K, pp) memory parts per stage (``memory.memory_parts``)."""
        ch, inv = self.chunks, self.inverse
        units = np.empty((len(self.rep_configs), self.configs[0].pp), dtype=np.int64)
        for rows, config in self.shapes.values():
            shape = (config.schedule, config.pp, config.num_microbatches, config.vpp)
            units[rows] = self.cache.get("inflight", shape, lambda c=config: [inflight_units(c, s) for s in range(c.pp)])
        logits = np.zeros((len(self.configs), self.configs[0].pp), dtype=np.int64)
        head_stage = ch.head_stage[inv]
        heads = np.flatnonzero(head_stage >= 0)
        if len(heads):  # the head stage's loss working set, once per table
            per_table: dict[tuple[int, str, int], int] = {}
            for i in heads.tolist():
                c = self.configs[i]
                key = (int(self.table_index[i]), c.target, min(c.num_microbatches, 2))
                if key not in per_table:
                    per_table[key] = logits_bytes(self.distinct_tables[key[0]], c.target, c.num_microbatches)
                logits[i, head_stage[i]] = per_table[key]
        return memory_parts(states, units[inv], ch.kept_bytes[inv], ch.work_bytes[inv], logits, configs=self.configs,
                            device_name=self.cluster.gpu.name)


def _not_finite(step_ms: np.ndarray, tflops: np.ndarray, parts: dict[str, np.ndarray]) -> list[ConfigError | None]:
    """Per row, an error when a figure is not a finite positive number (a profile or cluster beyond what floats hold
    reaches here only if its loader let it through; no NaN or inf is ever reported as a prediction)."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(step_ms) & (step_ms > 0) & np.isfinite(tflops)
        for values in parts.values():
            ok &= np.isfinite(values)
    if ok.all():
        return [None] * len(step_ms)
    return [None if good else ConfigError(
        f"the prediction is not a finite number (step time {float(t)!r} ms): the profile's or cluster's figures are "
        "out of range") for good, t in zip(ok.tolist(), step_ms.tolist(), strict=True)]


def _gather(pool: BatchPool | EventPool, refs: list[tuple[tuple, np.ndarray, np.ndarray]], k: int, pp: int,
            names: tuple[str, ...]) -> list[np.ndarray]:
    out = [np.empty((k, pp)) if name in ("end_ms", "busy_ms") else np.empty(k) for name in names]
    for shape, rows, idx in refs:
        res = pool.results[shape]
        for arr, name in zip(out, names, strict=True):
            arr[rows] = getattr(res, name)[idx]
    return out
