"""Checks GPU/cluster presets against tests/data/gpu_specs.csv, load_cluster's merging and resizing, and its errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from pptune.errors import ConfigError, SchemaError
from pptune.hardware import CLUSTER_PRESETS, GPU_PRESETS, Cluster, load_cluster, save_cluster
from pptune.testing.data import GPU_SPECS as SPECS

PRESET_OF_ROW = {"A100-SXM4-40GB": "a100-40g", "A100-SXM4-80GB": "a100-80g", "H100-SXM5-80GB": "h100-80g",
                 "H200-SXM-141GB": "h200"}


def test_presets_exist() -> None:
    assert set(CLUSTER_PRESETS) == {"a100-40g", "a100-80g", "h100-80g", "h200", "local-cpu"}
    assert {c.gpu.name for c in CLUSTER_PRESETS.values()} == set(GPU_PRESETS)


def test_presets_match_gpu_specs_csv() -> None:
    with SPECS.open(encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["gpu"] for r in rows} == set(PRESET_OF_ROW)
    for row in rows:
        c = CLUSTER_PRESETS[PRESET_OF_ROW[row["gpu"]]]
        assert c.gpu.name == row["gpu"]
        assert c.gpu.peak_bf16_tflops == float(row["peak_bf16_tflops_dense"]) == c.gpu.peak_fp16_tflops
        assert c.gpu.hbm_gbps == pytest.approx(float(row["hbm_tb_s"]) * 1000)
        assert abs(c.gpu.memory_gib - float(row["hbm_gb"])) < 1.0  # GiB as nvidia-smi reports vs the datasheet GB
        assert c.gpus_per_node == int(row["gpus_per_node"])
        # The link cells are prose: "<total> bidirectional total (<per direction> per direction ..." / "<n> per direction".
        assert c.intra_node_gbps == float(row["nvlink_gb_s_per_gpu"].split("(")[1].split()[0])
        assert c.inter_node_gbps == float(row["ib_gb_s_per_gpu"].split()[0])


def test_fp32_is_non_tensor_core_peak() -> None:
    assert GPU_PRESETS["A100-SXM4-80GB"].peak_tflops("fp32") == 19.5
    assert GPU_PRESETS["H100-SXM5-80GB"].peak_tflops("fp32") == 67


def test_local_cpu_is_two_ranks_with_host_memory() -> None:
    c = load_cluster("local-cpu")
    assert c.num_gpus == 2 and c.gpu.memory_gib > 0 and c.gpu.peak_fp32_tflops > 0


@pytest.mark.parametrize(("num_gpus", "per_node", "nodes"), [(1, 1, 1), (4, 4, 1), (8, 8, 1), (16, 8, 2), (12, 8, 2)])
def test_num_gpus_resizes(num_gpus: int, per_node: int, nodes: int) -> None:
    c = load_cluster("h100-80g", num_gpus=num_gpus)
    assert (c.gpus_per_node, c.num_nodes) == (per_node, nodes)


def test_num_gpus_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="num_gpus"):
        load_cluster("h100-80g", num_gpus=0)


def test_dict_takes_missing_keys_from_gpu_preset() -> None:
    c = load_cluster({"gpu": "A100-SXM4-40GB", "num_nodes": 4, "inter_node_gbps": 12.5})
    base = CLUSTER_PRESETS["a100-40g"]
    assert c.num_nodes == 4 and c.inter_node_gbps == 12.5 and c.intra_node_gbps == base.intra_node_gbps
    assert c.gpu == base.gpu and c.name == "a100-40g"


def test_gpu_object_overrides_preset_fields() -> None:
    c = load_cluster({"gpu": {"name": "h200", "matmul_efficiency": 0.6}})
    assert c.gpu.name == "H200-SXM-141GB" and c.gpu.matmul_efficiency == 0.6 and c.gpu.hbm_gbps == 4800


def test_custom_gpu_needs_its_fields_and_links() -> None:
    raw = {"name": "mi300x-node", "gpu": {"name": "MI300X", "peak_bf16_tflops": 1307, "memory_gib": 192, "hbm_gbps": 5300},
           "gpus_per_node": 8, "intra_node_gbps": 64, "inter_node_gbps": 50}
    c = load_cluster(raw)
    assert c.gpu.peak_fp16_tflops == 1307 and c.num_nodes == 1 and c.intra_node_latency_us > 0
    del raw["gpu"]["hbm_gbps"]
    with pytest.raises(SchemaError, match=r"gpu\.hbm_gbps"):
        load_cluster(raw)


def test_save_load_round_trip(tmp_path: Path) -> None:
    c = load_cluster("h100-80g", num_gpus=32).replace(per_microbatch_overhead_ms=0.3, calibration={"runs": 3})
    path = save_cluster(c, tmp_path / "c.json")
    assert load_cluster(path) == c and load_cluster(str(path)) == c
    assert isinstance(load_cluster(c), Cluster)


def test_collective_latency_is_optional_and_round_trips(tmp_path: Path) -> None:
    assert load_cluster("h100-80g").intra_node_collective_latency_us is None  # presets: the p2p latency
    c = load_cluster({"gpu": "h200", "intra_node_collective_latency_us": 300.0,
                      "inter_node_collective_latency_us": None})
    assert (c.intra_node_collective_latency_us, c.inter_node_collective_latency_us) == (300.0, None)
    assert load_cluster(save_cluster(c, tmp_path / "c.json")) == c


@pytest.mark.parametrize(("raw", "field"), [
    ({"gpu": "b300"}, "gpu"),
    ({"gpu": "h200", "intra_node_gbps": -1}, "intra_node_gbps"),
    ({"gpu": "h200", "inter_node_gbps": math.nan}, "inter_node_gbps"),
    ({"gpu": "h200", "inter_node_latency_us": "10"}, "inter_node_latency_us"),
    ({"gpu": "h200", "num_nodes": 1.5}, "num_nodes"),
    ({"gpu": "h200", "gpus_per_node": True}, "gpus_per_node"),
    ({"gpu": "h200", "bandwidth": 3}, "bandwidth"),
    ({"gpu": {"name": "h200", "hbm_gbps": -3}}, "gpu.hbm_gbps"),
    ({"gpu": 7}, "gpu"),
    ({"gpu": "h200", "calibration": []}, "calibration"),
    ({"gpus_per_node": 8}, "gpu"),
    # Absurd finite numbers (issue 19): refused at load time, not an OverflowError or a 300-digit step time.
    ({"gpu": {"name": "h200", "peak_bf16_tflops": 1e-300}}, "gpu.peak_bf16_tflops"),
    ({"gpu": {"name": "h200", "hbm_gbps": 1e300}}, "gpu.hbm_gbps"),
    ({"gpu": {"name": "h200", "matmul_efficiency": 1e-300}}, "gpu.matmul_efficiency"),
    ({"gpu": "h200", "inter_node_gbps": 1e-300}, "inter_node_gbps"),
    ({"gpu": "h200", "intra_node_latency_us": 1e30}, "intra_node_latency_us"),
    ({"gpu": "h200", "per_step_overhead_ms": 1e30}, "per_step_overhead_ms"),
    ({"gpu": "h200", "inter_node_collective_latency_us": -1}, "inter_node_collective_latency_us"),
    ({"gpu": "h200", "intra_node_collective_latency_us": "5"}, "intra_node_collective_latency_us"),
    ({"gpu": "h200", "calibration": {"compute_scale": 1e300}}, "calibration.compute_scale"),
])
def test_bad_fields_name_file_and_field(tmp_path: Path, raw: dict, field: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(SchemaError) as info:
        load_cluster(path)
    msg = str(info.value)
    assert str(path) in msg and f"'{field}'" in msg and "\n" not in msg


def test_unknown_preset_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="unknown cluster 'dgx'"):
        load_cluster("dgx")
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(SchemaError, match="not valid JSON"):
        load_cluster(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("[1]")
    with pytest.raises(SchemaError, match="JSON object"):
        load_cluster(tmp_path / "b.json")
    with pytest.raises(SchemaError, match="cannot read"):
        load_cluster(tmp_path / "missing.json")


def test_cluster_size_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"gpu": "h200", "gpus_per_node": 8, "num_nodes": 10**8}))
    with pytest.raises(SchemaError, match="num_nodes=100,000,000 is above"):
        load_cluster(path)
    with pytest.raises(ConfigError, match="GPU count=.* is above"):
        load_cluster("h200", num_gpus=10**9)
    assert load_cluster("h200", num_gpus=131_072).num_gpus == 131_072  # a 100k+ GPU cluster is real
