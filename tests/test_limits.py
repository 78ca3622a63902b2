"""pptune.limits: one bounded-size check for model shapes and jobs; every real model and cluster passes."""

from __future__ import annotations

import pytest

from pptune import limits
from pptune.errors import ConfigError


def test_real_models_and_jobs_pass() -> None:
    # Llama 3 405B: 126 layers, hidden 16384, 128 heads (8 kv), ffn 53248, 128k context, a 256k vocabulary.
    limits.check_model(name="llama3-405b", layers=126, hidden=16384, heads=128, kv_heads=8, ffn=53248,
                       vocab=256_000, seq=131_072)
    limits.check_job(global_batch_size=2**24, gpus=131_072, micro_batch_size=1, seq_len=131_072)
    limits.check_job(global_batch_size=1536, gpus=3072, max_micro_batch_size=16, num_microbatches=512)
    limits.check_cluster_size(gpus_per_node=72, num_nodes=2000)


@pytest.mark.parametrize(("kw", "fragment"), [
    ({"layers": 10**9}, "layers=1,000,000,000 is above"),
    ({"hidden": 2**30}, "hidden=.* is above"),
    ({"seq": 2**30}, "seq=.* is above"),
    ({"vocab": 10**10}, "vocab=.* is above"),
    ({"layers": 0}, "layers must be a positive integer, got 0"),
    ({"layers": True}, "layers must be a positive integer"),
])
def test_model_bounds_name_the_field(kw: dict, fragment: str) -> None:
    shape = {"name": "m", "layers": 2, "hidden": 64, "heads": 4, **kw}
    with pytest.raises(ConfigError, match=fragment):
        limits.check_model(**shape)


@pytest.mark.parametrize(("kw", "fragment"), [
    ({"global_batch_size": 10**11}, "global batch size=100,000,000,000 is above"),
    ({"gpus": 10**9}, "GPU count=.* is above"),
    ({"micro_batch_size": 2**20}, "micro-batch size=.* is above"),
    ({"micro_batch_size": 2**16, "seq_len": 2**20}, "tokens per micro-batch"),
    ({"num_microbatches": 2**20}, "micro-batches per step=.* is above"),
    ({"global_batch_size": 2**24, "gpus": 1, "micro_batch_size": 1}, "at least 16,777,216 micro-batches"),
    ({"global_batch_size": 0}, "must be a positive integer"),
])
def test_job_bounds(kw: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        limits.check_job(**kw)


def test_cluster_bound() -> None:
    with pytest.raises(ConfigError, match="GPUs is above"):
        limits.check_cluster_size(gpus_per_node=8, num_nodes=10**6)
