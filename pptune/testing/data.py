"""Paths of the data the test suite reads, vendored under tests/data/ (sources and licenses in its README.md)."""

from __future__ import annotations

from pathlib import Path

TEST_DATA = Path(__file__).resolve().parents[2] / "tests" / "data"

# vTrain's ground_truth_single.csv: 1,440 A100 Megatron-DeepSpeed iterations on one node.
PUBLISHED_SINGLE_NODE = TEST_DATA / "a100_megatron_single_node.csv"

# Datasheet figures of the GPU presets, each row with its sources.
GPU_SPECS = TEST_DATA / "gpu_specs.csv"
