"""ExplicitPipelineModule: boundary checks, and a real 2-rank gloo build of explicit and DeepSpeed-chosen stages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from pptune.errors import ConfigError
from pptune.runtime.launch import worker_env
from pptune.runtime.pipeline import ExplicitPipelineModule, validate_boundaries

WORKER = "pptune.testing.ds_workers.pipeline_build"


def test_validate_boundaries_accepts_and_casts() -> None:
    assert validate_boundaries([0, 1, 6], num_layers=6, num_stages=2) == (0, 1, 6)
    import numpy as np

    out = validate_boundaries(np.array([0, 3, 6]), num_layers=6, num_stages=2)
    assert out == (0, 3, 6) and all(type(b) is int for b in out)


@pytest.mark.parametrize(
    ("boundaries", "stages", "message"),
    [
        ([0, 6], 2, "2 stages need 3"),
        ([1, 3, 6], 2, "must start at 0, not 1"),
        ([0, 3, 5], 2, "must end at the layer count 6, not 5"),
        ([0, 3, 3, 6], 3, "stage 1 owns layers [3, 3)"),
        ([0, 4, 2, 6], 3, "stage 1 owns layers [4, 2)"),
        ([0, "x", 6], 2, "must be integers"),
    ],
)
def test_validate_boundaries_rejects(boundaries: list, stages: int, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_boundaries(boundaries, num_layers=6, num_stages=stages)


def test_bad_boundaries_fail_before_any_process_group() -> None:
    # No torch.distributed here: the check must come before PipelineModule.__init__ touches it.
    layers = [nn.Linear(2, 2) for _ in range(3)]
    with pytest.raises(ConfigError, match="3 entries; 3 stages need 4"):
        ExplicitPipelineModule(layers, boundaries=[0, 1, 3], num_stages=3)
    with pytest.raises(ConfigError, match="not partition_method"):
        ExplicitPipelineModule(layers, boundaries=[0, 3], num_stages=1, partition_method="uniform")


def _pptune_parameters_split() -> tuple[int, ...]:
    """What pptune's cost model expects DeepSpeed's 'parameters' method to build for the tiny GPT at pp 2."""
    from pptune.cost.partition import stage_boundaries
    from pptune.hardware import GPU_PRESETS
    from pptune.model.spec import TransformerSpec
    from pptune.parallel import ParallelConfig
    from pptune.profile.analytic import analytic_profile
    from pptune.testing.ds_workers.pipeline_build import TINY

    assert isinstance(TINY, TransformerSpec)
    profile = analytic_profile(TINY, GPU_PRESETS["local-cpu"], dtype="fp32", micro_batch_sizes=(1,))
    return stage_boundaries(profile, ParallelConfig(pp=2, partition="parameters", dtype="fp32"))


@pytest.mark.slow
def test_real_two_rank_build(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", WORKER, str(tmp_path)]
    done = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # Explicit [0, 1, 6]: stage 0 holds only the embedding, stage 1 the four blocks and the tied head.
    for r in ranks:
        assert r["explicit"]["parts"] == [0, 1, 6]
    e0, e1 = ranks[0]["explicit"], ranks[1]["explicit"]
    assert (e0["local_start"], e0["local_stop"], e0["kinds"]) == (0, 1, ["EmbeddingPipe"])
    assert (e1["local_start"], e1["local_stop"]) == (1, 6)
    assert e1["kinds"] == ["TransformerBlockPipe"] * 4 + ["tied_head_forward"]
    assert e1["param_count"] > e0["param_count"]

    # DeepSpeed's own "parameters" split is what pptune's cost model predicts, and differs from the explicit one.
    expected = list(_pptune_parameters_split())
    for r in ranks:
        assert r["parameters"]["parts"] == expected
    assert expected != [0, 1, 6]
    p0, p1 = ranks[0]["parameters"], ranks[1]["parameters"]
    assert (p0["local_start"], p0["local_stop"]) == (expected[0], expected[1]) and len(p0["kinds"]) == expected[1]
    assert (p1["local_start"], p1["local_stop"]) == (expected[1], 6) and len(p1["kinds"]) == 6 - expected[1]
