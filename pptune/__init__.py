"""pptune: plan pipeline-parallel training for DeepSpeed and Megatron-LM.

Profile a model layer by layer, predict the bubble, step time and memory of candidate
parallel configurations, search them with Optuna, and emit configs that launch as they are.
"""

from __future__ import annotations

__version__ = "0.1.0"

from pptune.errors import ConfigError, InfeasibleError, PptuneError, RunError, SchemaError

__all__ = ["ConfigError", "InfeasibleError", "PptuneError", "RunError", "SchemaError", "__version__"]
