"""``pptune plan`` that stops inside a trial until killed: ``python -m pptune.testing.plan_pause N plan ARGS...``.

When the search starts trial number N (0-based: trials 0 to N-1 have finished and are stored), this prints
``paused at trial N`` on stdout and sleeps until the process is killed. A test reads that line and kills the
search at a known point (N complete trials, one running) instead of polling the study's storage on a clock.
"""

from __future__ import annotations

import sys
import time


def pause_at(number: int) -> None:
    """Make every Optuna study of this process block when it starts trial ``number``."""
    import optuna

    optimize = optuna.study.Study.optimize

    def patched(self, func, *args, **kwargs):
        def objective(trial):
            if trial.number == number:
                print(f"paused at trial {number}", flush=True)
                while True:
                    time.sleep(3600)
            return func(trial)

        return optimize(self, objective, *args, **kwargs)

    optuna.study.Study.optimize = patched


if __name__ == "__main__":
    from pptune.cli import main

    pause_at(int(sys.argv[1]))
    raise SystemExit(main(sys.argv[2:]))
