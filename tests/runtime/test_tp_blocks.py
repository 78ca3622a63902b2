"""Tensor parallelism checked as picotron and Megatron check theirs: at the same seed, tp 2 trains the tp 1 model.

Real DeepSpeed runs on gloo through pptune's runtime (``build_module``/``initialize``, the worker
pptune.testing.ds_workers.tp_check): the step losses agree, and every gradient at the first optimizer step is the
matching slice of the tp 1 gradient (replicated parameters: all of it). Covered: a Llama shape (RMSNorm, RoPE,
SwiGLU, grouped-query attention, untied head, a vocabulary of 129 that tp 2 pads), a tied GPT with sequence
parallelism, pp 2 x tp 2 on 4 ranks (oversubscribed: correctness only) with DeepSpeed's pipe_partitioned and
grad_partitioned sends and recompute, the plain engine (ZeRO 2) at tp 2, and DeepSpeed's global gradient norm
(the one clipping uses) over the split parameters.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pptune.runtime.launch import worker_env

WORKER = "pptune.testing.ds_workers.tp_check"
STEPS = 2
CLIP = 1e-3  # far below the gradient norm, so every update is clipped
LLAMA = {"name": "tinyllama", "num_layers": 2, "hidden_size": 64, "num_heads": 4, "num_kv_heads": 2,
         "ffn_hidden_size": 128, "vocab_size": 129, "seq_len": 32, "tied_embeddings": False, "norm": "rmsnorm",
         "mlp": "swiglu", "position": "rope"}
# The conftest's tiny GPT (tied embeddings, learned positions) with an odd vocabulary: the last shard pads a row.
GPT = {"name": "tiny", "num_layers": 4, "hidden_size": 64, "num_heads": 2, "ffn_hidden_size": 256, "vocab_size": 127,
       "seq_len": 32}
UNSPLIT = {"pipe_partitioned": False, "grad_partitioned": False}
SPLIT = {"pipe_partitioned": True, "grad_partitioned": True}

# name: (reference plan, write_plan options); the reference is the same model and pp at tp 1.
PLANS = {
    # clipped (as emitted plans are): DeepSpeed's gradient norm counts split matrices on every tp rank, once
    "llama-tp1": dict(pp=1, partition_method="uniform", model=LLAMA, gradient_clipping=CLIP),
    "llama-tp2": dict(pp=1, tp=2, partition_method="uniform", model=LLAMA, ds_pipeline=SPLIT, gradient_clipping=CLIP),
    "gpt-tp1": dict(pp=1, partition_method="uniform", model=GPT),
    "gpt-tp2-sp": dict(pp=1, tp=2, sequence_parallel=True, partition_method="uniform", model=GPT, ds_pipeline=UNSPLIT),
    "gpt-pp2-tp1": dict(pp=2, model=GPT),
    "gpt-pp2-tp2": dict(pp=2, tp=2, model=GPT, ds_pipeline=SPLIT, checkpoint_interval=1),
    "gpt-zero2-tp1": dict(pp=1, zero=2, partition_method="uniform", model=GPT),
    "gpt-zero2-tp2": dict(pp=1, tp=2, zero=2, partition_method="uniform", model=GPT),
}
PAIRS = [("llama-tp1", "llama-tp2"), ("gpt-tp1", "gpt-tp2-sp"), ("gpt-pp2-tp1", "gpt-pp2-tp2"),
         ("gpt-zero2-tp1", "gpt-zero2-tp2")]


def _world(options: dict) -> int:
    return options["pp"] * options.get("tp", 1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, plan_writer) -> dict[str, list[dict]]:
    """Every plan trained once: one launch per world size (1, 2, 4 ranks), each running its plans in turn."""
    base = tmp_path_factory.mktemp("tp")
    plans = [plan_writer(base / name, gas=2, **options) for name, options in PLANS.items()]
    out = base / "out"
    for world in sorted({_world(o) for o in PLANS.values()}):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node",
               str(world), "-m", WORKER, str(STEPS), str(out), *map(str, plans)]
        done = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {name: [torch.load(out / name / f"rank{r}.pt") for r in range(_world(o))] for name, o in PLANS.items()}


def _slice_of(full: torch.Tensor, shard: dict | None) -> torch.Tensor:
    """The part of a tp 1 tensor a tp rank holds (``pptune_shard``), padding rows as zeros."""
    if shard is None:
        return full
    part = torch.cat([full.narrow(shard["dim"], a, b - a) for a, b in shard["ranges"]], dim=shard["dim"])
    if shard["rows"] is not None and shard["rows"] > part.shape[0]:
        part = torch.cat([part, part.new_zeros(shard["rows"] - part.shape[0], *part.shape[1:])])
    return part


@pytest.mark.slow
@pytest.mark.parametrize(("reference", "split"), PAIRS)
def test_tp2_trains_the_tp1_model(runs: dict[str, list[dict]], reference: str, split: str) -> None:
    refs = {r["stage"]: r for r in runs[reference]}
    ranks = runs[split]
    assert sorted((r["stage"], r["tp_rank"]) for r in ranks) == [(s, t) for s in sorted(refs) for t in (0, 1)]
    for rank in ranks:
        ref = refs[rank["stage"]]
        assert len(rank["losses"]) == STEPS
        torch.testing.assert_close(rank["losses"], ref["losses"], rtol=1e-5, atol=0)  # updates agree too
        assert rank["grads"].keys() == ref["grads"].keys()
        for name, grad in rank["grads"].items():
            shard = rank["shards"][name]
            expected = _slice_of(ref["grads"][name], shard)
            assert grad.shape == expected.shape, name
            torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6, msg=name)
        split_params = [n for n, s in rank["shards"].items() if s is not None]
        assert any("qkv" in n for n in split_params) and any(".word." in n or "lm_head" in n for n in split_params)
        if PLANS[split].get("zero", 0) < 2:
            assert rank["grads"], "the pipeline engine's gradients were captured"
        if PLANS[split]["pp"] == 1 and rank["grad_norm"] is not None:
            # DeepSpeed's global norm (what clipping uses) over tensor_model_parallel shards is the tp 1 norm. At
            # pp > 1 its fp32 path leaves out replicated parameters of later stages (pptune.runtime.topology).
            assert rank["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5)
            assert rank["grad_norm"] > 10 * CLIP


@pytest.mark.slow
def test_deepspeed_partitions_sends_over_the_tp_group(runs: dict[str, list[dict]]) -> None:
    # pp 2 x tp 2 with pipe_partitioned/grad_partitioned: DeepSpeed's own partitioned sends are on (model dim > 1).
    assert all(r["pipe_partitioned"] and r["grad_partitioned"] for r in runs["gpt-pp2-tp2"])
    assert not any(r["pipe_partitioned"] for r in runs["gpt-pp2-tp1"])  # tp 1: nothing to partition over
    assert not any(r["pipe_partitioned"] for r in runs["gpt-tp2-sp"])  # sequence parallel: sends already split
