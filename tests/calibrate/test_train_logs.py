"""train_logs: step time, peak memory and configuration from Megatron-LM / Megatron-DeepSpeed / DeepSpeed logs."""

from __future__ import annotations

import pytest

from pptune.calibrate.train_logs import configuration, parse_log
from pptune.errors import SchemaError

ARGS = """------------------------ arguments ------------------------
  bf16 ............................................ True
  deepspeed ....................................... False
  fp16 ............................................ False
  global_batch_size ............................... 512
  hidden_size ..................................... 2048
  micro_batch_size ................................ 4
  num_attention_heads ............................. 16
  num_layers ...................................... 24
  num_layers_per_virtual_pipeline_stage ........... None
  pipeline_model_parallel_size .................... 2
  recompute_granularity ........................... selective
  seq_length ...................................... 2048
  sequence_parallel ............................... True
  tensor_model_parallel_size ...................... 2
  virtual_pipeline_model_parallel_size ............ 3
  world_size ...................................... 32
-------------------- end of arguments ---------------------
"""
ITERATION = (" [2024-05-01 10:00:{s:02d}] iteration {i:8d}/     100 | consumed samples: {c:12d} | elapsed time per "
             "iteration (ms): {ms:.1f} | learning rate: 1.000E-04 | global batch size:   512 | lm loss: 7.1E+00 |")


def megatron_log(times: list[float]) -> str:
    lines = [ARGS, "[Rank 0] (after 10 iterations) memory (MB) | allocated: 9000.0 | max allocated: 20480.0 | "
                   "reserved: 22000.0 | max reserved: 22000.0"]
    lines += [ITERATION.format(s=i, i=10 * (i + 1), c=5120 * (i + 1), ms=ms) for i, ms in enumerate(times)]
    return "\n".join(lines)


def test_megatron_log_gives_median_step_without_warmup_and_the_logged_configuration() -> None:
    run = parse_log(megatron_log([9000.0, 1010.0, 990.0, 1000.0]), origin="m.log")
    assert run.step_ms == pytest.approx(1000.0) and run.iterations == 3
    assert run.peak_memory_gib == pytest.approx(20.0)
    config = configuration(run.arguments)
    assert config == {"tp": 2, "pp": 2, "dp": 8, "micro_batch_size": 4, "global_batch_size": 512,
                      "model": "gpt:layers=24,hidden=2048,heads=16,seq=2048", "dtype": "bf16",
                      "recompute": "selective", "sequence_parallel": True, "vpp": 3, "schedule": "interleaved_1f1b",
                      "target": "megatron", **{k: v for k, v in config.items() if k in ("attention",
                                                                                         "overlap_grad_reduce")}}


def test_megatron_deepspeed_arguments_select_the_deepspeed_target_and_zero() -> None:
    args = ARGS.replace("deepspeed ....................................... False",
                        "deepspeed ....................................... True\n"
                        "  zero_stage ...................................... 1")
    config = configuration(parse_log(args + ITERATION.format(s=0, i=1, c=1, ms=5.0), origin="x").arguments)
    assert config["target"] == "deepspeed" and config["zero"] == 1


def test_bigscience_seconds_and_deepspeed_pipeline_lines() -> None:
    bloom = " iteration   100/ 1000 | elapsed time per iteration (s): 105.22 | global batch size:  2048 |"
    assert parse_log(bloom, origin="b").step_ms == pytest.approx(105220.0)
    pipe = "\n".join(f"steps: {10 * i} loss: 2.3456 iter time (s): {t:0.3f} samples/sec: 12.345"
                     for i, t in enumerate((3.0, 0.5, 0.52, 0.51), start=1))
    pipe += "\n[INFO] MA 1.5 GB         Max_MA 7.25 GB         CA 8.0 GB         Max_CA 8 GB "
    run = parse_log(pipe, origin="p")
    assert run.step_ms == pytest.approx(510.0) and "iter time" in run.source
    assert run.peak_memory_gib == pytest.approx(7.25)


def test_throughput_timer_needs_the_global_batch_and_flops_profiler_units() -> None:
    line = ("[INFO] epoch=0/micro_step={n}/global_step={n}, RunningAvgSamplesPerSec=30.1, CurrSamplesPerSec={r}, "
            "MemAllocated=1.2GB, MaxMemAllocated=3.4GB")
    text = "\n".join(line.format(n=n, r=r) for n, r in ((10, 10.0), (20, 32.0), (30, 32.0)))
    with pytest.raises(SchemaError, match="needs the global batch size"):
        parse_log(text, origin="t.log")
    run = parse_log(text, origin="t.log", global_batch_size=64)
    assert run.step_ms == pytest.approx(2000.0) and run.peak_memory_gib == pytest.approx(3.4)
    assert parse_log("iter latency:                                                 41.39 s", origin="f").step_ms == \
        pytest.approx(41390.0)


def test_a_log_without_iteration_times_is_one_line() -> None:
    with pytest.raises(SchemaError, match=r"^empty\.log: no per-iteration time found"):
        parse_log("hello\nworld\n", origin="empty.log")
