"""dp_sync prices Megatron's overlap knobs: the gradient all-reduce and the parameter all-gather after the step."""

from __future__ import annotations

import pytest

from pptune.cost import comm
from pptune.cost.bulk import estimate_many
from pptune.cost.estimate import estimate
from pptune.hardware import load_cluster
from pptune.model.spec import PRESETS
from pptune.parallel import ParallelConfig
from pptune.profile.analytic import analytic_profile

SPEC = PRESETS["gpt3-6.7b"]


@pytest.fixture(scope="module")
def setup():
    cluster = load_cluster("a100-80g", num_gpus=32)
    profile = analytic_profile(SPEC, cluster.gpu, tp=2, micro_batch_sizes=(1,))
    return profile, cluster


def _config(**kw) -> ParallelConfig:
    return ParallelConfig(tp=2, pp=2, dp=8, micro_batch_size=1, num_microbatches=8, target="megatron",
                          partition="type:TransformerBlockPipe", **kw)


def test_defaults_are_what_megatron_emits_and_deepspeed_runs() -> None:
    z1 = _config(zero_stage=1)
    assert (z1.overlap_grad_reduce, z1.overlap_param_gather) == (True, True)
    assert (_config().overlap_grad_reduce, _config().overlap_param_gather) == (True, False)
    ds = ParallelConfig(pp=2, dp=4)
    assert (ds.overlap_grad_reduce, ds.overlap_param_gather) == (False, False)
    # a knob at its default follows a new ZeRO stage or target; one set by hand stays
    assert z1.replace(zero_stage=0).overlap_param_gather is False
    assert z1.replace(target="deepspeed").overlap_grad_reduce is False
    assert _config(overlap_grad_reduce=False).replace(pp=4).overlap_grad_reduce is False


def test_without_overlap_the_whole_stage_gradient_is_exposed(setup) -> None:
    profile, cluster = setup
    on, off = _config(), _config(overlap_grad_reduce=False)
    est_on, est_off = estimate(profile, cluster, on), estimate(profile, cluster, off)
    extra = est_off.breakdown.dp_comm_ms - est_on.breakdown.dp_comm_ms
    # the slowest stage's full all-reduce replaces its last bucket's (pptune's own all-reduce model)
    link = comm.dp_link(cluster, tp=2, dp=8, stage=0)
    params = sum(layer.param_count for layer in profile.layers[:est_on.boundaries[1]])
    full = comm.all_reduce_ms(params * 2, 8, link)
    assert 0.5 * full < extra <= full
    assert est_off.step_time_ms > est_on.step_time_ms + 0.5 * full


def test_without_param_gather_overlap_the_gather_is_exposed(setup) -> None:
    profile, cluster = setup
    on, off = _config(zero_stage=1), _config(zero_stage=1, overlap_param_gather=False)
    assert estimate(profile, cluster, off).step_time_ms > estimate(profile, cluster, on).step_time_ms


def test_bulk_path_prices_the_knobs_as_estimate_does(setup) -> None:
    profile, cluster = setup
    configs = [_config(), _config(overlap_grad_reduce=False), _config(zero_stage=1, overlap_param_gather=False),
               _config(zero_stage=1)]
    bulk = estimate_many(profile, cluster, configs)
    assert len({round(b.step_time_ms, 6) for b in bulk}) == 4  # no cache key merges two knobs
    for config, summary in zip(configs, bulk, strict=True):
        assert summary.step_time_ms == pytest.approx(estimate(profile, cluster, config).step_time_ms, rel=1e-9)
