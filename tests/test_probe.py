"""Checks link probing: the alpha-beta fit on synthetic times, argument errors, and a real 2-rank gloo probe round-tripped through a cluster file."""

from __future__ import annotations

import pytest

from pptune.cli import main
from pptune.errors import ConfigError, RunError
from pptune.hardware import load_cluster, save_cluster
from pptune.probe import fit_alpha_beta, probe_links

SMALL = (4096, 1048576, 8388608)  # big enough steps that load on a 2-core CI box cannot flatten them


def test_fit_recovers_alpha_and_beta() -> None:
    sizes = [4096 * 4**i for i in range(8)]
    alpha, beta = 20e-6, 25e9
    a, b = fit_alpha_beta(sizes, [alpha + n / beta for n in sizes])
    assert a == pytest.approx(alpha, rel=1e-6) and b == pytest.approx(beta, rel=1e-6)


def test_fit_clamps_negative_latency_and_rejects_flat_times() -> None:
    a, b = fit_alpha_beta([1000, 2000, 4000], [0.9e-6, 2.0e-6, 4.1e-6])
    assert a == 0.0 and b == pytest.approx(1e9, rel=0.1)
    with pytest.raises(RunError, match="do not grow"):
        fit_alpha_beta([1000, 2000], [2e-6, 1e-6])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"nproc": 1}, "at least 2 ranks"),
    ({"sizes_bytes": (4096,)}, "two distinct"),
    ({"sizes_bytes": (4096, 4097)}, "multiples of 4"),
    ({"repeat": 0}, "repeat"),
    ({"backend": "mpi"}, "backend"),
])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        probe_links(**kwargs)


def test_real_two_rank_probe_through_the_cli_round_trips(tmp_path, capsys) -> None:
    out = tmp_path / "cluster.json"
    argv = ["probe-cluster", "--nproc", "2", "--backend", "gloo", "--sizes", ",".join(map(str, SMALL)),
            "--repeat", "2", "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "p2p:" in printed and "all-reduce:" in printed and str(out) in printed
    cluster = load_cluster(out)
    probe = cluster.calibration["probe"]
    assert probe["command"].startswith("pptune probe-cluster") and probe["sizes_bytes"] == list(SMALL)
    assert all(t > 0 for t in probe["p2p_s"] + probe["allreduce_s"]) and probe["allreduce_bus_gbps"] > 0
    assert cluster.name == "local-probed" and cluster.gpu.name == "local-cpu" and cluster.num_gpus == 2
    assert cluster.intra_node_gbps == cluster.inter_node_gbps == probe["p2p_gbps"] > 0
    assert cluster.intra_node_latency_us >= 0
    # a ring step costs at least the back-to-back all-reduce fit's share, and whatever compute before it added
    step = cluster.intra_node_collective_latency_us
    assert step == probe["collective_step_latency_us"] >= probe["allreduce_latency_us"] / 2
    assert step >= probe["allreduce_after_compute_latency_us"] / 2 >= 0
    assert sorted(int(k) for k in probe["allreduce_after_compute_us"]) == [4096, 65536, 1048576]
    assert "after compute: all-reduces add 4 KiB" in printed
    assert load_cluster(save_cluster(cluster, tmp_path / "again.json")) == cluster


def test_cli_errors_are_one_line(capsys) -> None:
    assert main(["probe-cluster", "--nproc", "1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
