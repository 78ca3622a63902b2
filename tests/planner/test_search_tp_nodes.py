"""The search offers tp groups across nodes when asked (PlanSettings.tp_across_nodes) or when nothing inside a node
fits, and ranks them with every other layout; otherwise tp stays inside a node."""

from __future__ import annotations

from pptune.planner import PlanSettings, plan

# Two nodes of two H100s: tp 4 spans both nodes.
PAIRS = {"name": "pairs", "gpu": "H100-SXM5-80GB", "gpus_per_node": 2, "num_nodes": 2, "intra_node_gbps": 450.0,
         "inter_node_gbps": 50.0, "intra_node_latency_us": 5.0, "inter_node_latency_us": 10.0}
SMALL = "gpt:layers=4,hidden=1024,heads=16,vocab=1024,seq=512"
# One block of 1.6e10 parameters: at tp 2 (dp 2, ZeRO 1) its weights, gradients and optimizer states exceed
# 80 GB, at tp 4 they fit; the one block allows no pipeline stage to share the load.
HUGE = "gpt:layers=1,hidden=36864,heads=288,vocab=1024,seq=512"


def _plan(model: str, **settings):
    return plan(model, cluster=PAIRS, gpus=4, global_batch_size=8,
                settings=PlanSettings(exhaustive=True, target="megatron", **settings))


def test_tp_across_nodes_only_when_asked():
    inside, asked = _plan(SMALL), _plan(SMALL, tp_across_nodes=True)
    assert set(inside.ranking["tp"]) == {1, 2}
    assert set(asked.ranking["tp"]) == {1, 2, 4}
    feasible = asked.ranking[asked.ranking["feasible"]]
    assert 4 in set(feasible["tp"]) and feasible["tokens_per_s"].is_monotonic_decreasing  # ranked like the others
    across = asked.ranking[asked.ranking["tp"] == 4]
    assert (across["tp_comm_ms"] > 0).all()


def test_tp_across_nodes_when_nothing_inside_a_node_fits():
    result = _plan(HUGE)
    assert result.best.tp == 4 and result.estimate.feasible
    assert set(result.ranking["tp"]) >= {2, 4}
