"""The simulator's 1F1B op order on every stage equals DeepSpeed's own TrainSchedule instruction stream."""

from __future__ import annotations

import os

import pytest

from pptune.cost.orders import stage_orders

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def _deepspeed_stream(micro_batches: int, stages: int, stage_id: int) -> list[tuple[str, int]]:
    """(op, micro-batch) of each ForwardPass/BackwardPass, mapping buffers back to micro-batches."""
    from deepspeed.runtime.pipe import schedule as ds

    sched = ds.TrainSchedule(micro_batches=micro_batches, stages=stages, stage_id=stage_id)
    nbuf = sched.num_pipe_buffers()
    fwd_next = 0
    waiting: dict[int, list[int]] = {}  # buffer -> micro-batches whose forward ran, oldest first
    out = []
    for step in sched.steps():
        for cmd in step:
            if isinstance(cmd, ds.ForwardPass):
                assert cmd.buffer_id == fwd_next % nbuf
                waiting.setdefault(cmd.buffer_id, []).append(fwd_next)
                out.append(("F", fwd_next))
                fwd_next += 1
            elif isinstance(cmd, ds.BackwardPass):
                out.append(("B", waiting[cmd.buffer_id].pop(0)))
    return out


@pytest.mark.parametrize(("stages", "micro_batches"), [(1, 3), (2, 1), (2, 5), (3, 2), (4, 4), (4, 9), (8, 16)])
def test_1f1b_order_equals_deepspeed_train_schedule(stages, micro_batches):
    ours = stage_orders("1f1b", stages, micro_batches)
    for stage_id in range(stages):
        expected = _deepspeed_stream(micro_batches, stages, stage_id)
        got = [("F" if op == 0 else "B", j) for op, _, j in ours[stage_id]]
        assert got == expected, f"stage {stage_id}"
