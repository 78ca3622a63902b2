"""A calibrated compute scale: measured layer times multiplied by the factor ``pptune calibrate`` fitted.

``pptune calibrate`` stores ``compute_scale`` (real layer time in training runs / profiled layer time) in a
cluster's ``calibration``; ``profile_for`` applies it to measured profiles loaded for that cluster, so every
planner path (plan, estimate, charts) sees the calibrated times and the cost model itself stays unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pptune.hardware import check_compute_scale
from pptune.profile.schema import LayerTiming, Profile


def compute_scale_of(calibration: dict[str, Any], *, origin: str = "cluster") -> float:
    """``calibration['compute_scale']`` (1.0 when absent); ConfigError unless a positive number."""
    return check_compute_scale(calibration.get("compute_scale", 1.0), origin=f"{origin}: calibration.compute_scale")


def scaled_timing(t: LayerTiming, fwd_scale: float, bwd_scale: float) -> LayerTiming:
    """``t`` with its forward times (median, spread, attention share) times ``fwd_scale`` and its backward times
    (median, spread, the input/weight split) times ``bwd_scale``."""
    return dataclasses.replace(
        t, fwd_ms=t.fwd_ms * fwd_scale, bwd_ms=t.bwd_ms * bwd_scale, fwd_spread_ms=t.fwd_spread_ms * fwd_scale,
        bwd_spread_ms=t.bwd_spread_ms * bwd_scale, attn_fwd_ms=t.attn_fwd_ms * fwd_scale,
        bwd_input_ms=None if t.bwd_input_ms is None else t.bwd_input_ms * bwd_scale,
        bwd_weight_ms=None if t.bwd_weight_ms is None else t.bwd_weight_ms * bwd_scale)


def scaled_profile(profile: Profile, scale: float) -> Profile:
    """``profile`` with every layer's forward and backward times (spreads, attention share, backward split)
    multiplied by ``scale``."""
    if scale == 1.0:
        return profile
    layers = tuple(dataclasses.replace(layer, timings=tuple(scaled_timing(t, scale, scale) for t in layer.timings))
                   for layer in profile.layers)
    return dataclasses.replace(profile, layers=layers)
