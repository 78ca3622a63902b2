"""pptune estimate's summary: the memory margin against the device (and --memory-headroom) and the peak's parts."""

from __future__ import annotations

from pptune.commands.estimate_report import summary
from pptune.cost.estimate import estimate
from pptune.hardware import load_cluster
from pptune.parallel import ParallelConfig
from pptune.profile.source import profile_for

SPEC = "gpt:layers=2,hidden=64,heads=2,seq=32,vocab=128"


def test_summary_says_the_margin_and_the_parts() -> None:
    cluster = load_cluster("a100-80g", num_gpus=2)
    profile = profile_for(SPEC, cluster)
    config = ParallelConfig(pp=1, dp=2, partition="uniform")
    est = estimate(profile, cluster, config)
    spare = (cluster.gpu.memory_bytes - est.peak_memory_bytes) / 2**30
    assert f"fits with {spare:.2f} GiB to spare" in summary(profile, cluster, config, est)
    text = summary(profile, cluster, config, est, headroom_gib=spare + 1)
    assert "DOES NOT FIT, needs 1.00 GiB more (keeping" in text and "framework: cuda context 0.50" in text
    cpu = load_cluster("local-cpu", num_gpus=2)
    on_cpu = summary(profile, cpu, config, estimate(profile, cpu, config))
    assert "framework: none on this device" in on_cpu and "tensors: weights" in on_cpu
