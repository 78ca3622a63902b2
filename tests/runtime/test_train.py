"""One real 2-process DeepSpeed pipeline run of a tiny GPT: measured.json, planned stages built, per-stage timers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pptune.runtime.launch import run_plan
from pptune.runtime.measured import load_measured
from pptune.runtime.train import parse_args


def test_parse_args_defaults_and_limits() -> None:
    args = parse_args(["plan"])
    assert (args.steps, args.warmup, args.out, args.ds_timers) == (10, 3, None, False)
    with pytest.raises(SystemExit):
        parse_args(["plan", "--steps", "0"])


@pytest.mark.slow
def test_real_pipeline_run(plan_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps, gas = 3, 4
    # CI starts from an empty extension cache: the run must JIT-compile nothing (no shm_comm, no fused_adam).
    extensions = tmp_path / "torch_extensions"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(extensions))
    start = time.monotonic()
    m = run_plan(plan_dir, steps=steps, warmup=1, timeout_s=300, ds_timers=True)
    print(f"real 2-rank run: {time.monotonic() - start:.1f} s wall")  # shown with pytest -s; not asserted

    assert m == load_measured(plan_dir / "measured.json")
    assert not extensions.exists() or not any(extensions.iterdir()), list(extensions.rglob("*"))[:5]
    assert len(m.step_times_ms) == steps and all(t > 0 for t in m.step_times_ms)
    assert m.median_step_ms > 0 and m.final_loss is not None and m.final_loss > 0
    assert (m.pp, m.dp, m.world_size, m.num_microbatches) == (2, 1, 2, gas)
    assert m.optimizer == "AdamW" and m.device == "cpu" and m.threads == 1

    # The planned, uneven split [0, 2, 6] is what DeepSpeed built, on the ranks that should hold it.
    assert m.boundaries == m.planned_boundaries == (0, 2, 6)
    by_rank = {r.rank: r for r in m.ranks}
    assert (by_rank[0].stage, by_rank[0].layer_start, by_rank[0].layer_stop, by_rank[0].num_forward_funcs) == (0, 0, 2, 2)
    assert (by_rank[1].stage, by_rank[1].layer_start, by_rank[1].layer_stop, by_rank[1].num_forward_funcs) == (1, 2, 6, 4)

    # Every micro-batch is forwarded and backwarded once per step on each stage; p2p goes the right way.
    s0, s1 = (r.timers for r in (by_rank[0], by_rank[1]))
    for timers in (s0, s1):
        assert timers["ForwardPass"].calls_per_step == gas and timers["BackwardPass"].calls_per_step == gas
        assert timers["OptimizerStep"].calls_per_step == 1 and timers["ForwardPass"].per_step_ms > 0
    assert s0["SendActivation"].calls_per_step == gas and s0["RecvGrad"].calls_per_step == gas
    assert s1["RecvActivation"].calls_per_step == gas and s1["SendGrad"].calls_per_step == gas
    assert "RecvActivation" not in s0 and "SendActivation" not in s1
    # DeepSpeed's own timers ran too (wall_clock_breakdown with the backward-timer fix on stage 0).
    assert m.deepspeed_timers
    assert s0["bwd_microstep"].calls_per_step == gas and s1["bwd_microstep"].calls_per_step == gas
    assert s0["pipe_send_output"].calls_per_step == gas and s1["pipe_recv_input"].calls_per_step == gas
    assert [s.stage for s in m.stages] == [0, 1] and m.stages[1].timers_ms["ForwardPass"] > 0


@pytest.mark.slow
def test_real_pipeline_run_with_full_recompute(make_plan) -> None:
    # activation_checkpoint_interval 1 on 2 stages: DeepSpeed recomputes each block; the embedding is left out.
    plan = make_plan("recompute", checkpoint_interval=1)
    m = run_plan(plan, steps=2, warmup=1, timeout_s=300, ds_timers=False)
    assert m.activation_checkpoint_interval == 1 and m.boundaries == (0, 2, 6)
    assert len(m.step_times_ms) == 2 and m.final_loss is not None and m.final_loss > 0


@pytest.mark.slow
def test_real_tensor_parallel_run(make_plan) -> None:
    # tp 2 through the entry point pptune measure and launch.sh run: both ranks hold stage 0, half of each split matrix.
    tp1 = make_plan("tp1", pp=1, partition_method="uniform", predicted_ms=None)
    tp2 = make_plan("tp2", pp=1, tp=2, partition_method="uniform", ds_pipeline={"pipe_partitioned": True,
                                                                                "grad_partitioned": True})
    one = run_plan(tp1, nproc=1, steps=2, warmup=1, timeout_s=300, ds_timers=False)
    two = run_plan(tp2, steps=2, warmup=1, timeout_s=300, ds_timers=False)
    assert (two.tp, two.pp, two.dp, two.world_size) == (2, 1, 1, 2) and [r.stage for r in two.ranks] == [0, 0]
    assert two.final_loss == pytest.approx(one.final_loss, rel=1e-5)  # the same model, the same tokens
    full = one.ranks[0].param_count
    assert all(full / 2 < r.param_count < full for r in two.ranks)  # norms and positions are replicated
