"""The cost model: partition -> schedule simulation -> communication -> memory -> Estimate (pure Python).

``from pptune.cost import estimate`` gives the function (the package attribute is the function, not the
module ``pptune.cost.estimate``; ``from pptune.cost.estimate import estimate`` works too).
"""

from __future__ import annotations

from pptune.cost.estimate import estimate
from pptune.cost.types import Breakdown, Estimate, StageCost, TimelineOp

__all__ = ["Breakdown", "Estimate", "StageCost", "TimelineOp", "estimate"]
