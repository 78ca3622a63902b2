"""The planner: search a model's parallel configurations with the cost model and rank them.

- ``search``: ``plan()``, the entry point (TPE, NSGA-II or exhaustive), its ``PlanSettings`` and ``PlanResult``;
- ``space`` / ``layouts``: the search space (``build_space``, ``SearchSpace``) and the user's pins (``Fixed``);
- ``evaluator``: the cost model behind the search, with its caches (``Evaluator``);
- ``study``: the Optuna side (trial -> configuration, objective, SQLite storage, resume);
- ``ranking``: the ranking table (``ranking.csv``) and configuration labels;
- ``report``: what ``pptune plan`` prints (text and ``--json``).

Pure cost model: no torch, matplotlib or deepspeed. ``pptune.tune`` (real runs seeded by ``plan()``) and the
emitters are its callers, not part of it.
"""

from __future__ import annotations

from pptune.planner.evaluator import Evaluation, Evaluator
from pptune.planner.layouts import Fixed, Layout
from pptune.planner.ranking import config_label
from pptune.planner.search import PlanResult, PlanSettings, SearchSettings, plan
from pptune.planner.space import SearchSpace, build_space

__all__ = ["Evaluation", "Evaluator", "Fixed", "Layout", "PlanResult", "PlanSettings", "SearchSettings", "SearchSpace",
           "build_space", "config_label", "plan"]
