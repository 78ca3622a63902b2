"""The multi-node benchmark predicts each published run by the path the CLI takes: same inputs, same step time."""

from __future__ import annotations

import json

import pytest

from pptune.calibrate.multinode import predict, with_chosen_knobs
from pptune.calibrate.published_runs import PublishedRun, korthikanti_runs, sc21_runs
from pptune.cli import main
from pptune.hardware import load_cluster


def _cli_args(run: PublishedRun, cluster_path: str) -> list[str]:
    vocab = run.vocab if run.vocab % (128 * run.tp) == 0 else None
    assert vocab, "these runs state a padded vocabulary"
    args = [f"gpt:layers={run.layers},hidden={run.hidden},heads={run.heads},vocab={vocab},seq={run.seq_len}",
            "--cluster", cluster_path, "--tp", str(run.tp), "--pp", str(run.pp), "--dp", str(run.dp),
            "--micro-batch-size", str(run.micro_batch), "--global-batch-size", str(run.global_batch),
            "--recompute", run.recompute, "--dtype", run.dtype, "--target", run.target, "--zero", str(run.zero_stage),
            "--partition", run.partition if run.pp > 1 else "uniform", "--attention", "unfused", "--json"]
    if run.vpp > 1:
        args += ["--schedule", "interleaved_1f1b", "--vpp", str(run.vpp)]
    if run.sequence_parallel:
        args += ["--sequence-parallel"]
    if run.grad_reduce_overlapped is False:
        args += ["--no-overlap-grad-reduce"]
    return args


def _node_type(run: PublishedRun, tmp_path) -> str:
    """The a100-80g node type with the run's inter-node link, as a cluster JSON without a size (sized to the job)."""
    data = load_cluster("a100-80g").replace(inter_node_gbps=run.inter_node_gbps).to_dict()
    data.pop("num_nodes")
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("run", [with_chosen_knobs(sc21_runs()[1]), korthikanti_runs()[3]],
                         ids=["sc21-3.6B", "korthikanti-175B-seq-sel"])
def test_cli_gives_the_benchmarks_step_time(run, tmp_path, capsys) -> None:
    path = _node_type(run, tmp_path)
    assert main(["estimate", *_cli_args(run, path)]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["step_time_ms"] == pytest.approx(predict(run).step_time_ms, rel=1e-12)


def test_sc21_without_overlap_exposes_the_whole_all_reduce(tmp_path, capsys) -> None:
    run = with_chosen_knobs(sc21_runs()[1])  # tp 2 pp 1 dp 32: 2021 Megatron reduced after the backward
    assert run.grad_reduce_overlapped is False and run.dp > 1
    path = _node_type(run, tmp_path)
    args = _cli_args(run, path)
    assert main(["estimate", *args]) == 0
    off = json.loads(capsys.readouterr().out)
    assert main(["estimate", *[a for a in args if a != "--no-overlap-grad-reduce"]]) == 0
    on = json.loads(capsys.readouterr().out)
    assert off["breakdown_ms"]["dp_comm_ms"] > 10 * on["breakdown_ms"]["dp_comm_ms"]
    assert off["step_time_ms"] - on["step_time_ms"] == pytest.approx(
        off["breakdown_ms"]["dp_comm_ms"] - on["breakdown_ms"]["dp_comm_ms"], rel=1e-6)
