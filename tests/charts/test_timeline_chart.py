"""Timeline series: no stage runs two boxes at once, every op appears once, the alternative schedule rules, measured overlays."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pptune.charts.timeline import alternative_config, load_measured_timeline, timeline_series
from pptune.parallel import ParallelConfig
from pptune.runtime.measured import save_measured

CONFIGS = [
    ParallelConfig(pp=4, num_microbatches=8),
    ParallelConfig(pp=4, num_microbatches=8, schedule="gpipe", target="megatron"),
    ParallelConfig(pp=4, num_microbatches=8, schedule="zb_h1", target="megatron"),
    ParallelConfig(pp=4, num_microbatches=8, schedule="interleaved_1f1b", vpp=2, target="megatron"),
    ParallelConfig(pp=1, dp=4, num_microbatches=3),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"pp{c.pp}-{c.schedule}")
def test_boxes_do_not_overlap_and_each_op_runs_once(config, make_profile, make_cluster):
    profile = make_profile(blocks=16, edges=True)
    chart = timeline_series(profile, make_cluster(config.world_size, free_links=False), config)
    assert chart.panels[0].config == config and chart.panels[0].title.endswith("(chosen)")
    assert len(chart.panels) == 2 and chart.measured is None
    for panel in chart.panels:
        c = panel.config
        per_op = 3 if c.schedule == "zb_h1" else 2
        assert len(panel.ops) == c.pp * c.vpp * c.num_microbatches * per_op
        assert max(Counter((o.op, o.chunk, o.microbatch) for o in panel.ops).values()) == 1
        for stage in range(c.pp):
            boxes = sorted((o.start_ms, o.end_ms) for o in panel.ops if o.stage == stage)
            assert all(end > start for start, end in boxes)
            assert all(prev_end <= start + 1e-9 for (_, prev_end), (start, _) in zip(boxes, boxes[1:], strict=False))
        end = {(o.op, o.chunk, o.microbatch): o.end_ms for o in panel.ops}
        start = {(o.op, o.chunk, o.microbatch): o.start_ms for o in panel.ops}
        for (op, chunk, mb), t in start.items():
            if op == "B":
                assert t >= end[("F", chunk, mb)] - 1e-9
            if op == "W":
                assert t >= end[("B", chunk, mb)] - 1e-9
        assert panel.pipeline_ms == max(end.values()) <= panel.step_ms
        assert sum(o.end_ms - o.start_ms for o in panel.ops) == pytest.approx(sum(panel.busy_ms))


def test_alternatives():
    one_f_one_b = ParallelConfig(pp=4, dp=2, num_microbatches=8, zero_stage=1)
    alt = alternative_config(one_f_one_b, gpus=8, num_layers=18)
    assert (alt.schedule, alt.target, alt.pp) == ("zb_h1", "megatron", 4)
    zb = ParallelConfig(pp=4, num_microbatches=8, schedule="zb_h1", target="megatron")
    assert alternative_config(zb, gpus=4, num_layers=18).schedule == "1f1b"
    flat = alternative_config(ParallelConfig(pp=1, dp=8, zero_stage=2, num_microbatches=2), gpus=8, num_layers=18)
    assert (flat.pp, flat.dp, flat.zero_stage, flat.num_microbatches) == (2, 4, 1, 4)  # same global batch
    assert alternative_config(ParallelConfig(pp=1), gpus=1, num_layers=18) is None  # one GPU: no pipeline to show


def test_zero_bubble_alternative_idles_less(make_profile, make_cluster):
    chart = timeline_series(make_profile(blocks=16), make_cluster(4), ParallelConfig(pp=4, num_microbatches=8))
    chosen, alt = chart.panels
    assert alt.config.schedule == "zb_h1" and alt.bubble_fraction < chosen.bubble_fraction


def test_measured_timeline_overlay(tmp_path, make_measured):
    config = ParallelConfig(pp=2, num_microbatches=4)
    path = tmp_path / "measured.json"
    assert load_measured_timeline(path, config) is None
    save_measured(make_measured(pp=2, m=4, boundaries=(0, 9, 18)), path)
    got = load_measured_timeline(path, config)
    assert got is not None and got.step_ms == 110.0 and got.ops == ()
    assert load_measured_timeline(path, config.replace(num_microbatches=8)) is None  # another shape: not overlaid
    data = json.loads(path.read_text())
    data["timeline"] = [{"stage": 0, "microbatch": 0, "op": "F", "start_ms": 0.0, "end_ms": 2.5}]
    path.write_text(json.dumps(data))
    got = load_measured_timeline(path, config)
    assert len(got.ops) == 1 and got.ops[0].end_ms == 2.5
