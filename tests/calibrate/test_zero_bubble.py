"""ZB-H1 through estimate() on the Zero Bubble paper's profiled setups: bubble rates within 0.005 of its Table 5."""

from __future__ import annotations

import pytest

from pptune.calibrate.zero_bubble import SETUPS, predicted_bubble
from pptune.cost.schedule import W_SHARE_OF_BACKWARD


@pytest.mark.parametrize("setup", SETUPS, ids=[f"{s.model}-p{s.stages}-m{s.microbatches}" for s in SETUPS])
def test_zb_h1_and_1f1b_bubble_rates_match_the_paper(setup):
    assert predicted_bubble(setup, "zb_h1") == pytest.approx(setup.bubble_zb_h1, abs=0.005)
    assert predicted_bubble(setup, "1f1b") == pytest.approx(setup.bubble_1f1b, abs=0.005)


def test_the_measured_split_is_what_matches():
    # With the old fixed half of the backward as W, ZB-H1's bubble misses the paper by 0.01-0.04 on every setup:
    # the agreement above comes from the profiled W (0.34-0.43 of the backward), not from the schedule alone.
    misses = [setup.bubble_zb_h1 - predicted_bubble(setup, "zb_h1", w_share=W_SHARE_OF_BACKWARD) for setup in SETUPS]
    assert all(0.009 < miss < 0.05 for miss in misses), misses
    assert all(0.3 < s.w_share < 0.45 for s in SETUPS)
