"""The planner's pick predicts at least the throughput of the published configurations (issue 7, item 5)."""

from __future__ import annotations

import pytest

from pptune.cost.estimate import estimate
from pptune.hardware import load_cluster
from pptune.parallel import ParallelConfig
from pptune.profile.source import profile_for
from pptune.search import plan

MT_NLG = "gpt:layers=105,hidden=20480,heads=128,seq=2048,vocab=50272,name=mt-nlg-530b"


def _published(model: str, gpus: int, gbs: int, **config: object) -> float:
    cluster = load_cluster("a100-80g", num_gpus=gpus)
    cfg = ParallelConfig.from_global_batch(global_batch_size=gbs, micro_batch_size=1, dtype="bf16", **config)
    e = estimate(profile_for(model, cluster, tp=cfg.tp, dtype="bf16", micro_batch_sizes=(1,)), cluster, cfg)
    assert e.feasible, e.infeasible_reason
    return e.tokens_per_s


@pytest.mark.parametrize(
    ("model", "gpus", "gbs", "target", "published"),
    [
        # Narayanan et al. SC'21: GPT-3 175B on 1,024 A100s at batch 1536, tp 8, pp 8, interleaved, full recompute.
        ("gpt3-175b", 1024, 1536, "megatron",
         dict(tp=8, pp=8, dp=16, schedule="interleaved_1f1b", vpp=3, recompute="full",
              partition="type:TransformerBlockPipe", target="megatron")),
        # The same model under DeepSpeed's engine (1F1B only, ZeRO-1).
        ("gpt3-175b", 1024, 1536, "deepspeed",
         dict(tp=8, pp=8, dp=16, recompute="full", zero_stage=1, partition="type:TransformerBlockPipe")),
        # MT-NLG 530B (Smith et al. 2022): tp 8, pp 35, dp 8 on 2,240 A100s, batch 1920.
        (MT_NLG, 2240, 1920, "deepspeed",
         dict(tp=8, pp=35, dp=8, recompute="full", zero_stage=1, partition="type:TransformerBlockPipe")),
    ],
)
def test_pick_predicts_at_least_the_published_throughput(model: str, gpus: int, gbs: int, target: str,
                                                         published: dict) -> None:
    result = plan(model, cluster="a100-80g", gpus=gpus, global_batch_size=gbs, exhaustive=True, target=target,
                  max_micro_batch_size=4)
    assert result.estimate.feasible
    assert result.estimate.tokens_per_s >= _published(model, gpus, gbs, **published) * (1 - 1e-9)
    assert result.best.target == target and (target == "megatron" or result.best.schedule == "1f1b")
