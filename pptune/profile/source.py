"""Where a plan's per-layer costs come from: a profile file, or an analytic profile for the cluster's GPU.

The planner asks once per tensor-parallel degree, so both routes are cached: a file by its path and
modification time (the same Profile object comes back, which the cost model's own caches key on), an
analytic profile by its hashable arguments.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path

from pptune.errors import ConfigError
from pptune.hardware import GPU, Cluster, load_cluster
from pptune.model.spec import TransformerSpec, is_spec_model, resolve_spec, with_attention
from pptune.profile.analytic import analytic_profile
from pptune.profile.scale import compute_scale_of, scaled_profile
from pptune.profile.schema import Profile, load_profile


def profile_for(
    model_or_profile: str,
    cluster: Cluster | GPU | str,
    *,
    tp: int = 1,
    dtype: str = "bf16",
    micro_batch_sizes: Iterable[int] = (1, 2, 4, 8),
    sequence_parallel: bool = False,
    attention: str | None = None,
) -> Profile:
    """The profile to plan ``model_or_profile`` with.

    Args:
        model_or_profile: a profile file (``*.json``, measured or analytic: loaded as is, whatever ``tp``,
            ``dtype`` and sizes it was made with; the cost model re-shards it; a measured one takes a calibrated
            cluster's ``compute_scale``), or a model preset / spec string (an analytic profile for the cluster's
            GPU at this ``tp``).
        cluster: a Cluster, a GPU, or a cluster preset name or file.
        tp, dtype, micro_batch_sizes, sequence_parallel: the analytic profile's shape (see ``analytic_profile``).
        attention: ``flash`` or ``unfused`` for a preset or spec string (None: the spec's own, flash unless it
            says ``attention=unfused``); a profile file's kernel is the one it was made with, so another is refused.

    Raises:
        SchemaError: a malformed profile or cluster file.
        ConfigError: a model that is neither a file nor a preset or spec string.
    """
    if model_or_profile.endswith(".json"):
        path = Path(model_or_profile)
        try:
            stat = path.stat()
        except OSError:
            stat = None  # load_profile reports the missing file with its one-line SchemaError
        if stat is None:
            return load_profile(path)
        profile = _load_cached(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
        check_profile_attention(model_or_profile, profile, attention)
        return _calibrated(profile, cluster)
    try:
        spec = resolve_spec(model_or_profile)
    except ConfigError as exc:
        if is_spec_model(model_or_profile) or model_or_profile.startswith("hf:"):
            raise  # the spec's own problem (layers=0), or the hf: hint that already names profile files
        raise ConfigError(f"{exc}; or a profile file (*.json) made by 'pptune profile'") from None
    spec = with_attention(model_or_profile, spec, attention)
    gpu = cluster if isinstance(cluster, GPU) else load_cluster(cluster).gpu
    return _analytic_cached(spec, gpu, tp, dtype, tuple(sorted(set(micro_batch_sizes))), sequence_parallel)


def check_profile_attention(path: str, profile: Profile, attention: str | None) -> None:
    """A profile's attention is what it was made with (its spec's ``attention``): asking for another is an error."""
    if attention is None:
        return
    made = (profile.spec or {}).get("attention")
    if made != attention:
        what = f"was made with {made} attention" if made else "does not record its attention kernel"
        raise ConfigError(f"profile {path} ({profile.source}) {what}: --attention {attention} applies to a preset "
                          "or spec string (e.g. 'gpt3-175b?attention=unfused')")


_SCALED: dict[tuple[int, float], tuple[Profile, Profile]] = {}


def _calibrated(profile: Profile, cluster: Cluster | GPU | str) -> Profile:
    """A measured profile under a calibrated cluster's ``compute_scale`` (``pptune calibrate``; profile/scale.py).

    The scaled copy is cached per (profile, scale), so the cost model's caches keyed on the profile keep hitting.
    """
    if isinstance(cluster, GPU) or profile.source != "measured":
        return profile
    hw = load_cluster(cluster) if isinstance(cluster, str) else cluster
    scale = compute_scale_of(hw.calibration, origin=f"cluster {hw.name}")
    if scale == 1.0:
        return profile
    key = (id(profile), scale)
    hit = _SCALED.get(key)
    if hit is None or hit[0] is not profile:
        hit = _SCALED[key] = (profile, scaled_profile(profile, scale))
    return hit[1]


@functools.lru_cache(maxsize=64)
def _load_cached(path: str, mtime_ns: int, size: int) -> Profile:
    return load_profile(path)


@functools.lru_cache(maxsize=256)
def _analytic_cached(spec: TransformerSpec, gpu: GPU, tp: int, dtype: str, sizes: tuple[int, ...],
                     sequence_parallel: bool) -> Profile:
    return analytic_profile(spec, gpu, tp=tp, dtype=dtype, micro_batch_sizes=sizes,
                            sequence_parallel=sequence_parallel)
