"""The steady-state skip of pipelines whose slowest cycle spans several micro-batches agrees with the event loop.

With a p2p lag on every stage boundary, the cycle through the most stages is the slowest one: the ends
repeat only every that many micro-batches (one period each), so the skip must look for multi-period cycles.
"""

from __future__ import annotations

import numpy as np
import pytest

from pptune.cost import sim_batch
from pptune.cost.schedule import simulate


@pytest.mark.parametrize(("pp", "m"), [(16, 256), (24, 384)])
def test_multi_period_cycles_leave_through_the_skip_and_agree(pp, m, skipped_rows):
    rng = np.random.default_rng(pp)
    k = 8
    fwd = np.repeat(rng.uniform(1.0, 2.0, (k, 1)), pp, axis=1)
    fwd[:, 0] *= 0.5  # a light first stage (embedding only), a slightly heavier last one (head)
    fwd[:, -1] += rng.uniform(0.0, 0.1, k)
    bwd = 2.0 * fwd
    p2p = np.repeat(rng.uniform(0.3, 0.6, (k, 1)), pp - 1, axis=1)
    got = sim_batch.simulate_batch("1f1b", pp, m, 1, fwd, bwd, p2p)
    assert sum(skipped_rows) == k  # every row left through the skip
    for i in range(k):
        ref = simulate(fwd[i].tolist(), bwd[i].tolist(), schedule="1f1b", num_microbatches=m, p2p_ms=p2p[i].tolist())
        assert got.step_ms[i] == pytest.approx(ref.step_ms, rel=1e-12)
        assert got.end_ms[i].tolist() == pytest.approx(list(ref.end_ms), rel=1e-12)
