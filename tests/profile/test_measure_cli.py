"""`pptune profile`: writes a loadable profile and a table; bad input exits 2 with one line."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch

from pptune.cli import main
from pptune.commands.profile import default_output
from pptune.profile.schema import load_profile

TINY = "gpt:layers=2,hidden=64,heads=2,vocab=128,seq=32"
QUICK = ["--repeat", "1", "--threads", "1", "--no-progress"]


def test_profile_writes_a_file_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "tiny.json"
    argv = ["profile", TINY, "--seq-len", "16", "--micro-batch-sizes", "1,2", "--dtype", "fp32", *QUICK, "-o", str(out)]
    assert main(argv) == 0
    profile = load_profile(out)
    assert profile.micro_batch_sizes == (1, 2) and profile.seq_len == 16 and profile.threads == 1
    assert profile.command == "pptune " + shlex.join(argv)
    stdout = capsys.readouterr().out
    assert "block.0 x2" in stdout and "head" in stdout and f"wrote {out}" in stdout
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.json"]  # no temporary file left behind


def test_default_output_and_model_sequence_length(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["profile", "gpt:layers=1,hidden=32,heads=2,vocab=64,seq=8", "--micro-batch-sizes", "1", *QUICK]) == 0
    written = Path("profiles/gpt_layers_1_hidden_32_heads_2_vocab_64_seq_8-cpu.json")
    assert load_profile(written).seq_len == 8  # no --seq-len: the spec's own


def test_default_output_name():
    assert default_output("gpt2-small", "cpu") == Path("profiles/gpt2-small-cpu.json")
    assert default_output("hf:gpt2?n_layer=2", "cuda") == Path("profiles/hf_gpt2_n_layer_2-cuda.json")


@pytest.mark.parametrize("argv, message", [
    (["no-such-model"], "unknown model 'no-such-model'"),
    ([TINY, "--seq-len", "64"], "seq_len 64 is longer than its 32 learned positions"),
    ([TINY, "--warmup", "2"], "warmup must be an integer >= 5, got 2"),
    ([TINY, "--seq-len", "0"], "--seq-len must be positive, got 0"),
    ([TINY, "--repeat", "0"], "repeat must be an integer >= 1"),
    ([TINY, "--tp", "0"], "--tp must be at least 1, got 0"),
    ([TINY, "--tp", "3"], "is not divisible by tp 3"),
])
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path):
    assert main(["profile", *argv, "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("pptune profile: error:") and message in err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_gpu_exits_2(capsys):
    assert main(["profile", TINY, "--device", "cuda", "--micro-batch-sizes", "1"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("sizes", ["a,b", ","])
def test_malformed_micro_batch_sizes_are_usage_errors(sizes, capsys):
    assert main(["profile", TINY, "--micro-batch-sizes", sizes]) == 2
    assert "expected" in capsys.readouterr().err
