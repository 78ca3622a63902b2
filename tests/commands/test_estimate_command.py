"""``pptune estimate``: summary and --json output, --batch JSONL, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from pptune.cli import main

BASE = ["gpt2-medium", "--cluster", "a100-80g", "--pp", "4", "--dp", "2", "--micro-batch-size", "2",
        "--global-batch-size", "64"]
JSON_KEYS = {"step_time_ms", "samples_per_s", "tokens_per_s", "tflops_per_gpu", "mfu", "bubble_fraction",
             "peak_memory_bytes", "memory_per_stage_bytes", "feasible", "infeasible_reason", "breakdown_ms"}


def test_json_output_has_the_stable_keys(capsys):
    assert main(["estimate", *BASE, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert JSON_KEYS <= set(out)
    assert out["step_time_ms"] == pytest.approx(sum(out["breakdown_ms"].values()))
    assert len(out["memory_per_stage_bytes"]) == 4 and "timeline" not in out


def test_timeline_in_json(capsys):
    assert main(["estimate", *BASE, "--json", "--timeline"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["timeline"]) == 2 * 4 * 16  # F and B of 64 / (2 * 2) micro-batches on 4 stages


def test_readable_summary(capsys):
    assert main(["estimate", *BASE]) == 0
    text = capsys.readouterr().out
    assert "breakdown (ms): compute" in text and "tokens/s" in text and "MFU" in text
    assert len([line for line in text.splitlines() if line.strip().startswith(("0 ", "1 ", "2 ", "3 "))]) == 4


def test_stage_table_stays_aligned_for_interleaved_stages(capsys):
    """Each interleaved stage holds several layer ranges; the table's rows keep one width."""
    args = ["gpt3-175b", "--cluster", "a100-80g", "--gpus", "1024", "--tp", "8", "--pp", "8", "--dp", "16",
            "--micro-batch-size", "1", "--global-batch-size", "1536", "--target", "megatron",
            "--schedule", "interleaved_1f1b", "--vpp", "3"]
    assert main(["estimate", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index(next(x for x in lines if x.lstrip().startswith("stage"))):]
    assert len(table) == 9 and "," in table[1] and len({len(x) for x in table}) == 1


def test_a_sized_cluster_file_must_match(tmp_path, capsys):
    cluster = tmp_path / "c.json"
    cluster.write_text(json.dumps({"name": "two-nodes", "gpu": "a100-80g", "gpus_per_node": 8, "num_nodes": 2}))
    argv = ["estimate", "gpt2-medium", "--cluster", str(cluster), "--pp", "4", "--dp", "2", "--global-batch-size", "64"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tp 1 x pp 4 x dp 2 = 8 GPUs but cluster two-nodes has 16" in err
    assert main([*argv[:-6], "--pp", "4", "--dp", "4", "--global-batch-size", "64", "--json"]) == 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--gpus", "16"], "= 8 GPUs but 16 GPUs were given"),
    (["--global-batch-size", "30"], "global batch 30 is not divisible by micro batch 2 * dp 2 = 4"),
    (["--pp", "40", "--dp", "1", "--global-batch-size", "64", "--cluster", "h100-80g"], "pp 40 > 26 pipeline layers"),
    (["--tp", "3", "--pp", "1"], "not divisible by tp 3"),
    (["--zero", "2"], "ZeRO stage 2 with pp 4"),
    (["--cluster", "tpu-v9"], "unknown cluster 'tpu-v9'"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, extra, message):
    assert main(["estimate", *BASE, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_malformed_spec_and_cluster_file(tmp_path, capsys):
    assert main(["estimate", "gpt:layers=4,hidden=64", "--cluster", "a100-80g", "--global-batch-size", "8"]) == 2
    assert "model spec 'gpt:layers=4,hidden=64': missing" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["estimate", "gpt2-small", "--cluster", str(bad), "--global-batch-size", "8"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_batch_lines_in_order_with_errors_per_line(tmp_path, capsys):
    lines = [
        {"model": "gpt2-small", "pp": 2, "global_batch_size": 16},
        {"model": "gpt2-small", "pp": 2, "zero": 2, "global_batch_size": 16},
        "not json",
        {"pp": 2, "dp": 2, "micro_batch_size": 2, "global_batch_size": 16, "schedule": "1f1b",
         "cluster": {"name": "mine", "gpu": "h100-80g", "gpus_per_node": 4}},
        {"model": "gpt2-small", "colour": "red"},
    ]
    batch = tmp_path / "configs.jsonl"
    batch.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n\n")
    assert main(["estimate", "gpt2-small", "--cluster", "a100-80g", "--batch", str(batch)]) == 2  # some lines failed
    captured = capsys.readouterr()
    out = [json.loads(line) for line in captured.out.splitlines()]
    assert len(out) == 6 and [o["line"] for o in out] == [1, 2, 3, 4, 5, 6]  # one output line per input line
    assert out[5] == {"line": 6, "skipped": "blank line"}
    assert captured.err == "pptune estimate: error: 3 of 6 batch lines failed (lines 2, 3, 5)\n"
    assert JSON_KEYS <= set(out[0]) and JSON_KEYS <= set(out[3])
    assert "ZeRO stage 2" in out[1]["error"]
    assert "line 3: not valid JSON" in out[2]["error"]
    assert "unknown keys ['colour']" in out[4]["error"]
    assert out[3]["step_time_ms"] != out[0]["step_time_ms"]


BAD_LINES = [
    ('{"model": 123}', "line 1: model must be a string, got 123"),
    ('{"cluster": 7}', "line 1: cluster must be a preset name"),
    ('{"recompute": 3}', "line 1: recompute must be a string, got 3"),
    ('{"partition": ["a"]}', 'line 1: partition must be a string, got ["a"]'),
    ('{"global_batch_size": 100000000000}', "line 1: global batch size=100,000,000,000 is above"),
    ('{"sequence_parallel": "no"}', 'line 1: sequence_parallel must be true or false, got "no"'),
    ('{"zero": true}', "line 1: zero must be 0, 1, 2 or 3"),
    ('{"global_batch_size": 1' + "0" * 5000 + "}", "line 1: not valid JSON"),
    ("[" * 100000, "line 1: not valid JSON"),
    (b'{"model": "\xff"}', "line 1: not UTF-8 text"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES, ids=range(len(BAD_LINES)))
def test_a_bad_batch_line_is_its_own_error_and_the_batch_goes_on(tmp_path, capsys, line, message):
    batch = tmp_path / "b.jsonl"
    good = json.dumps({"global_batch_size": 16}).encode()
    batch.write_bytes((line if isinstance(line, bytes) else line.encode()) + b"\n" + good + b"\n")
    assert main(["estimate", "gpt2-small", "--cluster", "a100-80g", "--batch", str(batch)]) == 2
    captured = capsys.readouterr()
    first, second = (json.loads(x) for x in captured.out.splitlines())
    assert first["line"] == 1 and first["error"].startswith(message), first
    assert second["line"] == 2 and JSON_KEYS <= set(second)
    assert "Traceback" not in captured.err and len(captured.err.splitlines()) == 1


def test_an_all_good_batch_exits_0(tmp_path, capsys):
    batch = tmp_path / "b.jsonl"
    batch.write_text(json.dumps({"global_batch_size": 16}) + "\n\n" + json.dumps({"global_batch_size": 32}) + "\n")
    assert main(["estimate", "gpt2-small", "--cluster", "a100-80g", "--batch", str(batch)]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [o["line"] for o in out] == [1, 2, 3] and out[1] == {"line": 2, "skipped": "blank line"}


MEGATRON = ["gpt3-1.3b", "--cluster", "a100-80g", "--pp", "2", "--dp", "8", "--global-batch-size", "64",
            "--target", "megatron", "--zero", "1", "--json"]


def _step_ms(capsys, args: list[str]) -> float:
    assert main(["estimate", *args]) == 0
    return json.loads(capsys.readouterr().out)["step_time_ms"]


def test_attention_and_overlap_flags_and_their_batch_keys(tmp_path, capsys):
    base = _step_ms(capsys, MEGATRON)
    unfused = _step_ms(capsys, [*MEGATRON, "--attention", "unfused"])
    assert unfused > base and _step_ms(capsys, ["gpt3-1.3b?attention=unfused", *MEGATRON[1:]]) == unfused
    off = _step_ms(capsys, [*MEGATRON, "--attention", "unfused", "--no-overlap-grad-reduce"])
    assert off > unfused
    line = {"attention": "unfused", "overlap_grad_reduce": False}
    batch = tmp_path / "b.jsonl"
    batch.write_text(json.dumps(line) + "\n" + json.dumps({"overlap_param_gather": False}) + "\n")
    assert main(["estimate", *MEGATRON[:-1], "--batch", str(batch)]) == 0
    first, second = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    assert first["step_time_ms"] == off and second["step_time_ms"] > base


@pytest.mark.parametrize(("extra", "message"), [
    (["--overlap-grad-reduce", "--target", "deepspeed"],
     "DeepSpeed's pipeline engine reduces gradients after the backward: overlap_grad_reduce needs --target megatron"),
    (["--overlap-param-gather", "--zero", "0"], "--overlap-param-gather needs the distributed optimizer (ZeRO 1)"),
    (["--attention", "flash", "--target", "megatron"], "states attention=unfused but attention flash was asked for"),
])
def test_knob_errors_are_one_line(extra, message, capsys):
    model = "gpt3-1.3b?attention=unfused" if "flash" in extra else "gpt3-1.3b"
    assert main(["estimate", model, *MEGATRON[1:-1], *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_profile_files_attention_is_what_it_was_made_with(tmp_path, capsys):
    from pptune.hardware import load_cluster
    from pptune.model.spec import PRESETS
    from pptune.profile.analytic import analytic_profile
    from pptune.profile.schema import save_profile

    path = tmp_path / "p.json"
    save_profile(analytic_profile(PRESETS["gpt2-small"], load_cluster("a100-80g").gpu, micro_batch_sizes=(1,)), path)
    args = [str(path), "--cluster", "a100-80g", "--global-batch-size", "8", "--json"]
    assert _step_ms(capsys, [*args, "--attention", "flash"]) == _step_ms(capsys, args)
    assert main(["estimate", *args, "--attention", "unfused"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"profile {path} (analytic) was made with flash attention: --attention unfused applies to a preset" in err


class _ClosedPipe:
    """A stdout whose reader has gone (``pptune estimate ... | head``): every write raises BrokenPipeError."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        pass


def test_a_reader_that_leaves_gets_no_traceback(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdout", _ClosedPipe())
    assert main(["estimate", *BASE]) == 141  # 128 + SIGPIPE, as a shell reports it
    assert capsys.readouterr().err == ""
