"""Published multi-node training runs (held out: no pptune constant is fitted on them), with their sources.

Each run records exactly what its source says (iteration time, configuration) and, separately, what pptune has
to assume because the source does not say it. Sources:

- vTrain (Bang et al., MICRO'24): VIA-Research/vTrain ``data/ground_truth_multi.csv`` at commit
  f8dda8473a48b373b1d25f51f52d685bff5150c5, copied to pptune/data/vtrain_ground_truth_multi.csv: GPT
  3.6B-175B on 64-512 A100s, Megatron-DeepSpeed, measured iteration time. Their configs (config/validation/multi)
  say activation checkpointing on, 1F1B, 8 GPUs per node, inter-node 800 Gb/s per node (12.5 GB/s per GPU).
- Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models" (MLSys'23, arXiv
  2205.05198), Table 4 iteration times as transcribed by Calculon (calculon-ai/calculon
  ``calculon/megatron/validation.py``, configurations in ``validation/*_full.json``, ``examples/*.json``): the
  runs Calculon's 3.65% / 8.87% errors are measured on. Selene: DGX A100 80 GB, 8 x 200 Gb/s HDR per node.
- MT-NLG 530B (Smith et al. 2022, arXiv 2201.11990, Sec 2.4) as transcribed in cli99/llm-analysis
  ``examples/megatron-turing-nlg/README.md``: global batch 1920 on 280, 350 and 420 DGX A100 servers, "latency
  per iteration observed is 60.1, 50.2, and 44.4 seconds" (126, 121, 113 TFLOP/s per GPU); 105 layers, hidden
  20480, 128 heads, vocabulary 50,272, sequence 2048; tensor 8 x pipeline 35 (the paper's 3D layout).
- Megatron-LM SC'21 weak scaling (Narayanan et al., "Efficient Large-Scale Language Model Training on GPU
  Clusters Using Megatron-LM", SC'21, arXiv 2104.04473, Table 1): GPT 1.7B-1T on 32-3,072 Selene A100 80 GB, fp16,
  full recompute, sequence 2048, vocabulary 51,200. The table gives achieved TFLOP/s per GPU, not time: the
  iteration time is the paper's own FLOP count (its Eq. 3, recompute included) over that rate and the GPU count.
  The micro-batch size and interleaving degree are not in the table (``knobs_stated=False``). Checked cell by
  cell against two independent public transcriptions of Table 1 and the abstract (1T: 502 PFLOP/s on 3,072 GPUs,
  52% of peak); each row's aggregate PFLOP/s equals TFLOP/s per GPU x GPUs.
- BLOOM-176B (bigscience-workshop/bigscience ``train/tr11-176B-ml/README.md`` and ``chronicles.md``, entry
  2022-03-18: "elapsed time per iteration (s): 105.22 | global batch size: 2048 | ... | TFLOPs: 149.02").
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pptune.calibrate.published import padded_vocab
from pptune.hardware import Cluster

VTRAIN_CSV = Path(__file__).resolve().parents[1] / "data" / "vtrain_ground_truth_multi.csv"


@dataclass(frozen=True, kw_only=True, slots=True)
class PublishedRun:
    """One published run: the model, the configuration, the cluster's links and the measured iteration time."""

    source: str
    name: str
    layers: int
    hidden: int
    heads: int
    vocab: int  # as the source gives it; padded to 128 * tp for Megatron (Megatron's default) when not already
    seq_len: int
    tp: int
    pp: int
    dp: int
    micro_batch: int
    global_batch: int
    measured_s: float
    target: str = "deepspeed"  # Megatron-DeepSpeed runs the DeepSpeed pipeline engine
    vpp: int = 1
    recompute: str = "full"
    sequence_parallel: bool = False
    dtype: str = "fp16"
    zero_stage: int = 0
    partition: str = "type:transformerblock"
    inter_node_gbps: float = 25.0  # per GPU per direction
    assumed: str = ""
    knobs_stated: bool = True  # False: the source gives no micro-batch size / interleaving (see sc21_runs)
    # False: the data-parallel all-reduce followed the backward (2021 Megatron); None: the target's default
    # (Megatron overlaps, DeepSpeed's pipeline engine reduces after the backward). ParallelConfig.overlap_grad_reduce.
    grad_reduce_overlapped: bool | None = None


def vtrain_runs(path: Path = VTRAIN_CSV) -> list[PublishedRun]:
    """vTrain's 109 multi-node measurements (fp16 and GPT-2's 50,257-token vocabulary assumed)."""
    runs = []
    with path.open(encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            runs.append(PublishedRun(
                source="vTrain", name=f"{row['Parameters (billion)']}B", layers=int(row["# layers"]),
                hidden=int(row["hidden size"]), heads=int(row["attention heads"]), vocab=50257,
                seq_len=int(row["sequence length"]), tp=int(row["tensor parallelism"]),
                pp=int(row["pipeline parallelism"]), dp=int(row["data parallelism"]), micro_batch=int(row["micro batch"]),
                global_batch=int(row["global batch"]), measured_s=float(row["iteration time (ms)"]) / 1e3,
                inter_node_gbps=800 / 8 / 8, assumed="fp16, vocabulary 50,257 (GPT-2), ZeRO 0, A100 80 GB"))
    return runs


def korthikanti_runs() -> list[PublishedRun]:
    """Korthikanti et al. Table 4: full recompute, and sequence parallelism + selective recompute."""
    table = (  # name, hidden, heads, layers, tp, pp, micro batch, global batch, interleaving, full (s), seq+sel (s)
        ("22B", 6144, 64, 48, 8, 1, 4, 4, 1, 1.42, 1.10),
        ("175B", 12288, 96, 96, 8, 8, 1, 64, 3, 18.13, 13.75),
        ("530B", 20480, 128, 105, 8, 35, 1, 280, 3, 49.05, 37.83),
        ("1T", 25600, 160, 128, 8, 64, 1, 512, 1, 94.42, 71.49),
    )
    runs = []
    for name, h, a, layers, tp, pp, mbs, gbs, vpp, full_s, seqsel_s in table:
        for mode, seconds in (("full", full_s), ("selective", seqsel_s)):
            runs.append(PublishedRun(
                source="Korthikanti", name=f"{name} {'full' if mode == 'full' else 'seq+sel'}", layers=layers,
                hidden=h, heads=a, vocab=51200, seq_len=2048, tp=tp, pp=pp, dp=1, micro_batch=mbs, global_batch=gbs,
                measured_s=seconds, target="megatron", vpp=vpp, recompute=mode, sequence_parallel=mode != "full",
                assumed="vocabulary 51,200 (their GPT setting), fp16"))
    return runs


def mtnlg_runs() -> list[PublishedRun]:
    """MT-NLG 530B on 2240, 2800 and 3360 GPUs (tp 8, pp 35, dp 8/10/12, micro-batch 1)."""
    return [PublishedRun(
        source="MT-NLG", name=f"530B on {dp * 280} GPUs", layers=105, hidden=20480, heads=128, vocab=50272,
        seq_len=2048, tp=8, pp=35, dp=dp, micro_batch=1, global_batch=1920, measured_s=seconds,
        assumed="micro-batch 1, fp16, ZeRO 0, full recompute, DeepSpeed pipeline engine (1F1B), Selene A100 80 GB")
        for dp, seconds in ((8, 60.1), (10, 50.2), (12, 44.4))]


SC21_TABLE1 = (  # billions of parameters, heads, hidden, layers, tp, pp, GPUs, global batch, achieved TFLOP/s per GPU
    (1.7, 24, 2304, 24, 1, 1, 32, 512, 137),
    (3.6, 32, 3072, 30, 2, 1, 64, 512, 138),
    (7.5, 32, 4096, 36, 4, 1, 128, 512, 142),
    (18.4, 48, 6144, 40, 8, 1, 256, 1024, 135),
    (39.1, 64, 8192, 48, 8, 2, 512, 1536, 138),
    (76.1, 80, 10240, 60, 8, 4, 1024, 1792, 140),
    (145.6, 96, 12288, 80, 8, 8, 1536, 2304, 148),
    (310.1, 128, 16384, 96, 8, 16, 1920, 2160, 155),
    (529.6, 128, 20480, 105, 8, 35, 2520, 2520, 163),
    (1008.0, 160, 25600, 128, 8, 64, 3072, 3072, 163),
)


def sc21_flops(*, batch: int, seq_len: int, layers: int, hidden: int, vocab: int) -> float:
    """FLOPs of one iteration as the SC'21 paper counts them (Eq. 3: forward, backward and full recompute)."""
    return 96 * batch * seq_len * layers * hidden**2 * (1 + seq_len / (6 * hidden) + vocab / (16 * layers * hidden))


def sc21_runs() -> list[PublishedRun]:
    """Megatron-LM SC'21 Table 1: the iteration time is the paper's FLOPs / (TFLOP/s per GPU x GPUs).

    The micro-batch size and the interleaving degree are not stated: ``micro_batch`` and ``vpp`` hold 1 and the
    check lets pptune choose them as a user would (its fastest feasible micro-batch size and interleaving).
    """
    runs = []
    for billions, heads, hidden, layers, tp, pp, gpus, batch, tflops in SC21_TABLE1:
        seconds = sc21_flops(batch=batch, seq_len=2048, layers=layers, hidden=hidden, vocab=51200) / (tflops * 1e12 * gpus)
        runs.append(PublishedRun(
            source="SC'21", name=f"{billions:g}B", layers=layers, hidden=hidden, heads=heads, vocab=51200,
            seq_len=2048, tp=tp, pp=pp, dp=gpus // (tp * pp), micro_batch=1, global_batch=batch,
            measured_s=round(seconds, 3), target="megatron", knobs_stated=False, grad_reduce_overlapped=False,
            assumed="fp16, full recompute, Selene A100 80 GB (8 x 200 Gb/s HDR per node); micro-batch size and "
                    "interleaving not stated: pptune's fastest feasible choice; the gradient all-reduce after the "
                    "backward, not overlapped (2021 Megatron had no --overlap-grad-reduce)"))
    return runs


def bloom_run() -> PublishedRun:
    """BLOOM-176B at full batch: 384 A100 80 GB, tp 4, pp 12, dp 8, bf16, ZeRO-1 (README 'Replica setup')."""
    return PublishedRun(
        source="BLOOM", name="BLOOM-176B", layers=70, hidden=14336, heads=112, vocab=250880, seq_len=2048, tp=4,
        pp=12, dp=8, micro_batch=2, global_batch=2048, measured_s=105.22, dtype="bf16", zero_stage=1,
        partition="type:transformerblockpipe|embeddingpipe|headpipe",  # README: 'type:transformer|embedding'
        inter_node_gbps=4 * 100 / 8 / 8,  # 4 Omni-Path links per node, 100 Gb/s each (OPA 100 series)
        assumed="Omni-Path links at 100 Gb/s; ALiBi modelled as learned positions (s*h extra parameters); "
                "embedding layer norm not modelled")


def batch_item(run: PublishedRun, cluster: Cluster) -> dict[str, Any]:
    """The run as a ``pptune estimate --batch`` line (``pptune.batch_lines``) on ``cluster`` with its inter-node link.

    What ``pptune estimate`` is told for the run: a spec string with ``attention=unfused`` (these Megatron versions
    had no flash attention), the vocabulary padded to 128 x tp as Megatron pads it, and the run's gradient-reduce
    overlap (``overlap_grad_reduce``; None: the target's).
    """
    vocab = run.vocab if run.vocab % (128 * run.tp) == 0 else padded_vocab(run.vocab, run.tp)
    model = (f"gpt:layers={run.layers},hidden={run.hidden},heads={run.heads},ffn={4 * run.hidden},vocab={vocab},"
             f"seq={run.seq_len},attention=unfused")
    return {
        "model": model, "cluster": cluster.replace(inter_node_gbps=run.inter_node_gbps), "gpus": None,
        "tp": run.tp, "pp": run.pp, "dp": run.dp, "micro_batch_size": run.micro_batch,
        "global_batch_size": run.global_batch, "schedule": "interleaved_1f1b" if run.vpp > 1 else "1f1b",
        "vpp": run.vpp, "zero": run.zero_stage, "recompute": run.recompute,
        "partition": run.partition if run.pp > 1 else "uniform", "dtype": run.dtype, "target": run.target,
        "sequence_parallel": run.sequence_parallel, "attention": None, "overlap_grad_reduce": run.grad_reduce_overlapped,
        "overlap_param_gather": None,
    }
