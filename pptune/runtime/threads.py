"""How many torch threads one rank of a CPU run gets: the figure the runtime sets and ``pptune profile`` times with.

On CPU every rank of ``pptune measure`` / ``launch.sh`` is one process with ``OMP_NUM_THREADS`` and
``torch.set_num_threads`` at this value, pinned to a core of its own (runtime/train.py): two ranks on a 2-core
host otherwise fight over the cores (docs/REFERENCE.md §2). A CPU profile timed with more threads than this
predicts layers faster than the ranks will run them, so ``pptune profile --device cpu`` defaults to it and
``pptune plan`` says so when a profile was timed otherwise. Torch-free, so the planner can import it.
"""

from __future__ import annotations

CPU_THREADS_PER_RANK = 1
