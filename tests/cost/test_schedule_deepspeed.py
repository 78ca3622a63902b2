"""The simulator's 1F1B op order and DeepSpeed's blocking messages against DeepSpeed's own TrainSchedule stream."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pptune.cost import orders
from pptune.cost.orders import RENDEZVOUS_1F1B, deepspeed_instructions, stage_orders
from pptune.cost.schedule import simulate
from pptune.cost.sim_batch import simulate_batch

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


def _deepspeed_commands(micro_batches: int, stages: int, stage_id: int) -> list[tuple[str, int]]:
    """(instruction class, buffer) of DeepSpeed's messages and passes, in its order (loads and the step left out)."""
    from deepspeed.runtime.pipe import schedule as ds

    kinds = (ds.SendActivation, ds.RecvActivation, ds.SendGrad, ds.RecvGrad, ds.ForwardPass, ds.BackwardPass)
    sched = ds.TrainSchedule(micro_batches=micro_batches, stages=stages, stage_id=stage_id)
    return [(type(cmd).__name__, cmd.buffer_id) for step in sched.steps() for cmd in step if isinstance(cmd, kinds)]


_DS_NAMES = {"F": "ForwardPass", "B": "BackwardPass", orders.SEND_ACT: "SendActivation",
             orders.RECV_ACT: "RecvActivation", orders.SEND_GRAD: "SendGrad", orders.RECV_GRAD: "RecvGrad"}


@pytest.mark.parametrize(("stages", "micro_batches"), [(1, 3), (2, 1), (2, 5), (3, 2), (4, 4), (4, 9), (8, 16)])
def test_message_order_equals_deepspeed_train_schedule(stages, micro_batches):
    from deepspeed.runtime.pipe import schedule as ds

    for stage_id in range(stages):
        nbuf = ds.TrainSchedule(micro_batches=micro_batches, stages=stages, stage_id=stage_id).num_pipe_buffers()
        ours = [(_DS_NAMES[name], j % nbuf) for name, j in deepspeed_instructions(stage_id, stages, micro_batches)]
        assert ours == _deepspeed_commands(micro_batches, stages, stage_id), f"stage {stage_id}"


def _rendezvous_step(fwd, bwd, transfer, micro_batches):
    """Run DeepSpeed's own instruction streams: a pass takes its time, a send and its matching receive start
    when both stages have reached them and end together one transfer later (an independent re-simulation)."""
    stages = len(fwd)
    streams = [_deepspeed_commands(micro_batches, stages, s) for s in range(stages)]
    partner = {"SendActivation": ("RecvActivation", 1), "RecvActivation": ("SendActivation", -1),
               "SendGrad": ("RecvGrad", -1), "RecvGrad": ("SendGrad", 1)}
    pc, clock = [0] * stages, [0.0] * stages
    while any(pc[s] < len(streams[s]) for s in range(stages)):
        moved = False
        for s in range(stages):
            while pc[s] < len(streams[s]):
                name, _ = streams[s][pc[s]]
                if name in ("ForwardPass", "BackwardPass"):
                    clock[s] += fwd[s] if name == "ForwardPass" else bwd[s]
                    pc[s] += 1
                    moved = True
                    continue
                want, step = partner[name]
                q = s + step
                if pc[q] >= len(streams[q]) or streams[q][pc[q]][0] != want:
                    break  # the partner has not reached the matching instruction yet
                clock[s] = clock[q] = max(clock[s], clock[q]) + transfer[min(s, q)]
                pc[s] += 1
                pc[q] += 1
                moved = True
        assert moved, "deadlock"
    return max(clock)


@pytest.mark.parametrize(("stages", "micro_batches"), [(2, 1), (2, 6), (3, 2), (4, 9), (6, 14)])
def test_rendezvous_pipeline_equals_running_deepspeeds_stream(stages, micro_batches):
    rng = np.random.default_rng(stages * 100 + micro_batches)
    for _ in range(4):
        fwd, bwd = rng.uniform(1.0, 3.0, stages).tolist(), rng.uniform(2.0, 6.0, stages).tolist()
        transfer = rng.uniform(0.0, 1.5, stages - 1).tolist()
        want = _rendezvous_step(fwd, bwd, transfer, micro_batches)
        got = simulate(fwd, bwd, schedule=RENDEZVOUS_1F1B, num_microbatches=micro_batches, p2p_ms=transfer)
        assert got.step_ms == pytest.approx(want, rel=1e-12)
        batch = simulate_batch(RENDEZVOUS_1F1B, stages, micro_batches, 1, np.array([fwd] * 50), np.array([bwd] * 50),
                               np.array([transfer] * 50))
        assert batch.step_ms.tolist() == pytest.approx([got.step_ms] * 50, rel=1e-12)


def test_uniform_rendezvous_costs_2m_minus_3_transfers_more_than_sender_held_sends():
    # The model before: each send lengthened its sender's op (forward + c except the last stage, backward + c
    # except the first). DeepSpeed's pairing adds (2m - 3) transfers to that for pp >= 3 (uniform stages, transfers
    # short against a forward).
    for stages, m, c in ((3, 4, 0.2), (4, 8, 0.1), (8, 24, 0.05), (16, 64, 0.01)):
        f, b = [1.0] * stages, [2.0] * stages
        held = simulate([x + c for x in f[:-1]] + f[-1:], b[:1] + [x + c for x in b[1:]], schedule="1f1b",
                        num_microbatches=m).step_ms
        paired = simulate(f, b, schedule=RENDEZVOUS_1F1B, num_microbatches=m, p2p_ms=c).step_ms
        assert paired - held == pytest.approx((2 * m - 3) * c, rel=1e-9)
