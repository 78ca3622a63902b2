"""DeepSpeed's partition methods as pptune computes them equal the parts a real PipelineModule builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pptune.cost.partition import stage_boundaries
from pptune.parallel import ParallelConfig
from pptune.profile.schema import LayerProfile, LayerTiming, Profile

WORKER = "pptune.testing.ds_workers.ds_partition"


def _profile(layers: list[dict], tied: bool) -> Profile:
    timing = (LayerTiming(micro_batch_size=1, fwd_ms=1.0, bwd_ms=2.0, saved_bytes=1, output_bytes=1),)
    roles = ["embedding"] + ["block"] * (len(layers) - 2) + ["head"]
    spec = {"name": "ds-test", "num_layers": len(layers) - 2, "hidden_size": 32, "num_heads": 4,
            "ffn_hidden_size": 64, "vocab_size": 500, "seq_len": 16, "tied_embeddings": tied}
    return Profile(
        model="ds-test", source="measured", device="cpu", device_name="cpu", dtype="fp32", seq_len=16,
        micro_batch_sizes=(1,), spec=spec,
        layers=tuple(LayerProfile(index=i, name=f"l{i}", kind=f["kind"], role=roles[i], param_count=f["param_count"],
                                  param_bytes=4 * f["param_count"], timings=timing) for i, f in enumerate(layers)),
    )


@pytest.fixture(scope="module")
def deepspeed_parts(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ds") / "parts.json"
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", WORKER, str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
    assert "built successfully" not in proc.stdout + proc.stderr, "the shm op was built: the worker's patch failed"
    return json.loads(out.read_text())


@pytest.mark.slow
def test_partition_matches_real_pipeline_module(deepspeed_parts):
    cases = deepspeed_parts["cases"]
    assert len(cases) == 16
    for case in cases:
        profile = _profile(deepspeed_parts["layers"][case["model"]], case["tied"])
        config = ParallelConfig(pp=case["num_stages"], partition=case["method"], dtype="fp32")
        ours = stage_boundaries(profile, config)
        assert list(ours) == case["parts"], case


@pytest.mark.slow
def test_tied_head_counts_the_embedding_again(deepspeed_parts):
    # Counting the tied head once (as the profile stores it) would split differently from DeepSpeed.
    layers = deepspeed_parts["layers"]["tied"]
    from deepspeed.runtime.utils import partition_balanced

    once = [int(x) for x in partition_balanced(weights=[f["param_count"] for f in layers], num_parts=4)]
    real = next(c["parts"] for c in deepspeed_parts["cases"]
                if c["model"] == "tied" and c["num_stages"] == 4 and c["method"] == "parameters")
    assert once != real
