"""One ``tune(shared=True)`` worker process for tests: its runs take ``--run-s`` seconds and are logged to a file.

``python -m pptune.testing.tune_worker --storage journal:PATH --out DIR --seed S --runs-log FILE``: the runs
stand in for DeepSpeed (1.1x the prediction, ``pptune.testing.records.fake_measured``) so that two workers
exercise Optuna's shared storage, not the two cores; each run appends ``<pid> <label>`` to FILE (O_APPEND, one
write), which is how a test sees which configuration ran where, and how often.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from pptune.parallel import ParallelConfig
from pptune.planner import Fixed, PlanSettings
from pptune.testing.records import fake_measured
from pptune.tune import TuneSettings, tune

MODEL = "gpt:layers=2,hidden=64,heads=2,seq=32,vocab=128"
PLAN = PlanSettings(exhaustive=True, dtype="fp32", fixed=Fixed(tp=1), max_micro_batch_size=4)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--storage", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--runs-log", required=True)
    p.add_argument("--run-s", type=float, default=0.5)
    args = p.parse_args()

    def run_plan(path, *, steps: int, warmup: int, timeout_s: float):
        plan = json.loads((Path(path) / "plan.json").read_text())
        fd = os.open(args.runs_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{os.getpid()} {plan['label']}\n".encode())
        finally:
            os.close(fd)
        time.sleep(args.run_s)
        return fake_measured(ParallelConfig(**plan["config"]), 1.1 * plan["estimate"]["step_time_ms"])

    tune(MODEL, cluster="local-cpu", gpus=2, global_batch_size=4, out_dir=args.out, storage=args.storage,
         settings=TuneSettings(top_k=2, trials=args.trials, seed=args.seed), plan_settings=PLAN, run_plan=run_plan,
         shared=True, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
