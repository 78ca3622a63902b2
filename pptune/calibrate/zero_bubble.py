"""ZB-H1 against the Zero Bubble paper's own profiled setups: its measured F, B, W and p2p times, its bubble rates.

Source: Qi, Wan, Huang & Lin, "Zero Bubble Pipeline Parallelism", ICLR 2024 (arXiv 2401.10241), the version in
sail-sg/zero-bubble-pipeline-parallelism at commit 3a91d0c8c21755dd0f7b425e3ac5699ab00b4083 (``paper.pdf``):
Table 9 (Appendix D, "profiled time of T_F, T_B, T_W and T_comm", ms, recorded in ZB-2p runs of GPT-3-like models
on A100 nodes, Table 3) and Table 5 (bubble rates, "based on theoretical calculations": ``(cost - m (T_F + T_B +
T_W)) / cost`` with ``cost`` the largest stage's execution time under those profiled times). Each stage holds equal
work (the paper gives the first and last stage one layer fewer to offset the embedding and the loss).

The check builds, per setup, a profile of ``p`` identical layers with the paper's T_F, bwd = T_B + T_W split as
measured, and a cluster whose every p2p message takes T_comm, and runs it through ``pptune.cost.estimate`` as
zb_h1 and 1f1b (Megatron's asynchronous messages); ``bubble_fraction`` is the paper's bubble rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from pptune.cost.estimate import estimate
from pptune.cost.schedule import W_SHARE_OF_BACKWARD as W_HALF
from pptune.hardware import GPU, Cluster
from pptune.parallel import ParallelConfig
from pptune.profile.schema import LayerProfile, LayerTiming, Profile

SOURCE = ("Qi et al., Zero Bubble Pipeline Parallelism, ICLR 2024 (arXiv 2401.10241), Tables 5 and 9; "
          "sail-sg/zero-bubble-pipeline-parallelism@3a91d0c8 paper.pdf")


@dataclass(frozen=True, kw_only=True, slots=True)
class PaperSetup:
    """One row of the paper's Tables 9 and 5."""

    model: str
    stages: int  # p
    microbatches: int  # m
    f_ms: float  # T_F
    b_ms: float  # T_B (input gradient)
    w_ms: float  # T_W (weight gradient)
    comm_ms: float  # T_comm (one p2p message)
    bubble_1f1b: float  # Table 5
    bubble_zb_h1: float  # Table 5

    @property
    def w_share(self) -> float:
        return self.w_ms / (self.b_ms + self.w_ms)


def _row(model: str, p: int, m: int, f: float, b: float, w: float, c: float, one: float, zb: float) -> PaperSetup:
    return PaperSetup(model=model, stages=p, microbatches=m, f_ms=f, b_ms=b, w_ms=w, comm_ms=c, bubble_1f1b=one,
                      bubble_zb_h1=zb)


SETUPS: tuple[PaperSetup, ...] = (
    _row("1.5B", 8, 24, 18.522, 18.086, 9.337, 0.601, 0.2431, 0.1585),
    _row("1.5B", 8, 32, 18.513, 18.086, 9.331, 0.626, 0.1985, 0.1242),
    _row("1.5B", 8, 64, 18.546, 18.097, 9.321, 0.762, 0.1240, 0.0674),
    _row("6.2B", 8, 24, 29.718, 29.444, 19.927, 0.527, 0.2347, 0.1323),
    _row("6.2B", 8, 32, 29.802, 29.428, 19.530, 0.577, 0.1898, 0.1045),
    _row("6.2B", 8, 64, 29.935, 29.621, 19.388, 0.535, 0.1091, 0.0554),
    _row("14.6B", 16, 48, 11.347, 11.248, 8.132, 0.377, 0.2552, 0.1397),
    _row("14.6B", 16, 64, 11.307, 11.254, 8.101, 0.379, 0.2082, 0.1088),
    _row("14.6B", 16, 128, 11.325, 11.308, 8.109, 0.378, 0.1251, 0.0576),
    _row("28.3B", 32, 96, 10.419, 10.207, 7.715, 0.408, 0.2646, 0.1421),
    _row("28.3B", 32, 128, 10.408, 10.204, 7.703, 0.408, 0.2168, 0.1106),
    _row("28.3B", 32, 256, 10.402, 10.248, 7.698, 0.460, 0.1352, 0.0594),
)

MESSAGE_BYTES = 1  # the p2p time is the cluster's latency alone (links of 1e12 GB/s)
FREE_GBPS = 1e12


def setup_profile(setup: PaperSetup, *, w_share: float | None = None) -> Profile:
    """``p`` identical layers with the paper's times; ``w_share`` replaces its measured split (None: keep it)."""
    bwd = setup.b_ms + setup.w_ms
    weight = setup.w_ms if w_share is None else w_share * bwd
    timing = LayerTiming(micro_batch_size=1, fwd_ms=setup.f_ms, bwd_ms=bwd, bwd_input_ms=bwd - weight,
                         bwd_weight_ms=weight, saved_bytes=1, output_bytes=MESSAGE_BYTES)
    layers = tuple(LayerProfile(index=i, name=f"stage.{i}", kind="Stage", role="block", param_count=1, param_bytes=2,
                                timings=(timing,)) for i in range(setup.stages))
    return Profile(model=f"zero-bubble-paper-{setup.model}", source="measured", device="cuda",
                   device_name="A100 (the paper's profile)", dtype="bf16", seq_len=1, micro_batch_sizes=(1,),
                   layers=layers, notes=SOURCE)


def setup_cluster(setup: PaperSetup) -> Cluster:
    """One GPU per stage, 8 per node; every link's latency is T_comm and its bandwidth free."""
    gpu = GPU(name="a100-80g", peak_bf16_tflops=312.0, peak_fp16_tflops=312.0, peak_fp32_tflops=19.5,
              memory_gib=80.0, hbm_gbps=2039.0)
    us = setup.comm_ms * 1e3
    return Cluster(name="zero-bubble-paper", gpu=gpu, gpus_per_node=8, num_nodes=max(1, setup.stages // 8),
                   intra_node_gbps=FREE_GBPS, inter_node_gbps=FREE_GBPS, intra_node_latency_us=us,
                   inter_node_latency_us=us)


def predicted_bubble(setup: PaperSetup, schedule: str, *, w_share: float | None = None) -> float:
    """pptune's bubble fraction of ``schedule`` (``zb_h1`` or ``1f1b``) on the paper's setup."""
    config = ParallelConfig(pp=setup.stages, num_microbatches=setup.microbatches, schedule=schedule,
                            target="megatron")
    return estimate(setup_profile(setup, w_share=w_share), setup_cluster(setup), config).bubble_fraction


def report_markdown(command: str) -> str:
    """The comparison as a Markdown report: per setup the paper's and pptune's bubble rates, and with W = half."""
    lines = [
        "# ZB-H1 against the Zero Bubble paper's profiled setups",
        "",
        f"Made by `{command}`.",
        "",
        f"Source: {SOURCE}.",
        "",
        "Each setup's T_F, T_B, T_W and T_comm (Table 9) go into a profile of p equal stages (bwd = T_B + T_W, split",
        "as profiled) and a cluster whose p2p takes T_comm; pptune's `estimate` gives the bubble fraction, the paper's",
        "bubble rate (Table 5: (cost - m(T_F + T_B + T_W)) / cost). The last column is ZB-H1 with the fixed split",
        f"pptune used before profiles carried one (W = {W_HALF} of the backward).",
        "",
        "| model | p | m | W / (B + W) | 1F1B paper | 1F1B pptune | ZB-H1 paper | ZB-H1 pptune | error | ZB-H1, W = half |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst = 0.0
    for s in SETUPS:
        zb, one = predicted_bubble(s, "zb_h1"), predicted_bubble(s, "1f1b")
        half = predicted_bubble(s, "zb_h1", w_share=W_HALF)
        worst = max(worst, abs(zb - s.bubble_zb_h1))
        lines.append(f"| {s.model} | {s.stages} | {s.microbatches} | {s.w_share:.3f} | {s.bubble_1f1b:.4f} | {one:.4f} "
                     f"| {s.bubble_zb_h1:.4f} | {zb:.4f} | {zb - s.bubble_zb_h1:+.4f} | {half:.4f} |")
    lines += ["", f"Largest ZB-H1 error: {worst:.1e} (acceptance: 0.005)."]
    return "\n".join(lines) + "\n"
