"""Checks the held-out multi-node benchmark runs and its errors stay where results/validation/published/multinode.md says."""

from __future__ import annotations

import statistics

import pytest

from pptune.calibrate.multinode import main, predict, same_pipeline_lines, with_chosen_knobs
from pptune.calibrate.published_runs import (
    bloom_run,
    korthikanti_runs,
    mtnlg_runs,
    sc21_flops,
    sc21_runs,
    vtrain_runs,
)


def _errors(runs) -> list[float]:
    return [predict(r).step_time_ms / 1e3 / r.measured_s - 1 for r in runs if r.tp <= 8]


def test_korthikanti_runs_within_calculon_range() -> None:
    errors = _errors(korthikanti_runs())
    assert len(errors) == 8 and statistics.fmean(abs(e) for e in errors) < 0.06 and max(map(abs, errors)) < 0.16


def test_vtrain_multinode_runs() -> None:
    runs = vtrain_runs()
    assert len(runs) == 109 and sum(r.tp > 8 for r in runs) == 6
    errors = _errors(runs)
    assert statistics.median(abs(e) for e in errors) < 0.08 and statistics.fmean(abs(e) for e in errors) < 0.12


def test_sc21_table_times_come_from_the_papers_flop_count() -> None:
    runs = sc21_runs()
    assert [r.tp * r.pp * r.dp for r in runs] == [32, 64, 128, 256, 512, 1024, 1536, 1920, 2520, 3072]
    one_t = runs[-1]  # 1T: 502 PFLOP/s aggregate in the paper = 163 TFLOP/s x 3,072 GPUs
    flops = sc21_flops(batch=3072, seq_len=2048, layers=128, hidden=25600, vocab=51200)
    assert one_t.measured_s == round(flops / (163e12 * 3072), 3) and 100 < one_t.measured_s < 105


def test_sc21_unstated_knobs_are_pptunes_fastest_feasible_choice() -> None:
    run = sc21_runs()[4]  # 39.1B, tp 8 pp 2: interleaving allowed
    chosen = with_chosen_knobs(run)
    assert chosen.knobs_stated is False and predict(chosen).feasible
    per_replica = run.global_batch // run.dp
    for mbs in (1, 2, 4, 8):
        other = predict(type(run)(**{**{f: getattr(run, f) for f in run.__slots__}, "micro_batch": mbs, "vpp": 1}))
        assert predict(chosen).step_time_ms <= other.step_time_ms or not other.feasible
    assert per_replica % chosen.micro_batch == 0 and run.layers % (run.pp * chosen.vpp) == 0
    # predicted too fast by 2-15% (multinode.md): a regression beyond 20% either way fails
    errors = [predict(with_chosen_knobs(r)).step_time_ms / 1e3 / r.measured_s - 1 for r in sc21_runs()]
    assert all(-0.2 < e < 0.05 for e in errors)


def test_reduce_after_backward_adds_the_exposed_all_reduce() -> None:
    run = with_chosen_knobs(sc21_runs()[0])  # 1.7B, pure data parallelism over 32 GPUs
    overlapped = predict(type(run)(**{**{f: getattr(run, f) for f in run.__slots__}, "grad_reduce_overlapped": True}))
    exposed = predict(run)
    extra = exposed.step_time_ms - overlapped.step_time_ms
    # 1.7B fp16 gradients (3.4 GB) all-reduced over 4 nodes, the ring on each node's 8 NICs (comm.dp_link): ~35 ms
    assert 10 < extra < 100
    assert exposed.breakdown.dp_comm_ms == pytest.approx(overlapped.breakdown.dp_comm_ms + extra, rel=1e-12)


def test_known_underpredictions_are_reported_not_hidden() -> None:
    # MT-NLG (2021 Megatron-DeepSpeed) and BLOOM run slower than the model says; multinode.md lists them.
    assert all(-0.35 < e < -0.1 for e in _errors(mtnlg_runs() + [bloom_run()]))


def test_report_is_written(tmp_path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    text = (tmp_path / "multinode.md").read_text()
    assert "| Korthikanti | 530B full |" in text and "tensor parallelism across nodes (tp 16 on 8-GPU nodes): n=6" in text
    assert "| 530B | Megatron-DeepSpeed 2021 (MT-NLG) | 8 | 240 | v1 | 60.10 |" in text
    assert len((tmp_path / "multinode.csv").read_text().splitlines()) == 1 + 8 + 10 + 3 + 1 + 109


def test_same_pipeline_comparison_puts_the_2021_software_slower() -> None:
    rows = [r for r in same_pipeline_lines() if "reference" not in r]
    assert len(rows) == 5
    assert all(float(r.rsplit("|", 2)[-2].strip().rstrip("%")) > 0 for r in rows)
