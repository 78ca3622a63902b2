"""The embedded default job behind ``make demo``: profile a small GPT here, plan it, emit, draw, recommend.

Every step is the library's public API, so this file doubles as the shortest end-to-end example.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEMO_MODEL = "gpt:layers=8,hidden=256,heads=4,seq=256,vocab=8192,name=demo-gpt"
DEMO_GLOBAL_BATCH = 32
DEMO_GPUS = 2  # this machine runs 2 gloo ranks; the emitted plan launches here as it is


@dataclass(frozen=True, kw_only=True, slots=True)
class DemoResult:
    out_dir: Path
    profile_path: Path
    plan_dir: Path
    figures: tuple[Path, ...]
    summary: str


def run_demo(out_dir: str | os.PathLike = "results/demo", *, model: str = DEMO_MODEL, seq_len: int = 256, repeat: int = 5,
             measure: bool = False, progress: bool = True, command: str | None = None) -> DemoResult:
    """Profile ``model`` on the local CPU (1 thread), plan it for 2 local ranks, write everything to ``out_dir``.

    Args:
        out_dir: where ``profile.json`` and the plan directory ``plan/`` (with ``figures/``) go; replaced whole.
        model: any MODEL that ``pptune profile`` accepts.
        seq_len: sequence length to profile and plan at.
        repeat: timed repeats per layer and micro-batch size (after 5 warm-ups).
        measure: also run the recommended plan with real DeepSpeed and compare (about a minute more).
        progress: progress bars on stderr.
        command: the command line recorded in the files.
    """
    from pptune.draw.plan import draw_plan_figures
    from pptune.emit.plan_dir import write_plan_dir
    from pptune.planner import PlanSettings, plan
    from pptune.planner.report import text_report
    from pptune.profile.measure import profile_model
    from pptune.profile.schema import save_profile

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        profile = profile_model(model, seq_len=seq_len, micro_batch_sizes=(1, 2, 4, 8), device="cpu", dtype="fp32",
                                threads=1, repeat=repeat, command=command, progress=progress)
        profile_path = save_profile(profile, tmp / "profile.json")
        result = plan(str(profile_path), cluster="local-cpu", gpus=DEMO_GPUS, global_batch_size=DEMO_GLOBAL_BATCH,
                      settings=PlanSettings(exhaustive=True, dtype="fp32"), progress=progress)
        write_plan_dir(result, tmp / "plan", command=command)
        draw_plan_figures(tmp / "plan")
        summary = text_report(result, out / "plan", top=5)
        if measure:
            from pptune.runtime.launch import run_plan

            measured = run_plan(tmp / "plan", steps=10, warmup=3, timeout_s=900)
            predicted = result.estimate.step_time_ms
            summary += (f"\nmeasured with real DeepSpeed: {measured.median_step_ms:.1f} ms per step "
                        f"(predicted {predicted:.1f} ms, error {(predicted - measured.median_step_ms) / measured.median_step_ms:+.1%})")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    plan_dir = out / "plan"
    return DemoResult(out_dir=out, profile_path=out / "profile.json", plan_dir=plan_dir,
                      figures=tuple(sorted((plan_dir / "figures").glob("*"))), summary=summary)
