"""Read measured plan directories back as calibration samples: configuration, profile and measured step time.

A measured run is a plan directory (from ``pptune plan``, ``pptune validate --local`` or ``pptune tune``) with
``plan.json`` (the configuration under ``config`` and the profile it was estimated with under ``profile``) and
``measured.json`` (from ``pptune measure`` / ``run_plan``). A path to the ``measured.json`` itself also works.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pptune.calibrate.local_fit import Sample
from pptune.errors import SchemaError
from pptune.parallel import ParallelConfig
from pptune.profile.schema import Profile, load_profile
from pptune.runtime.measured import MEASURED_FILE, load_measured
from pptune.runtime.plan_files import PLAN_FILE


def _measured_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(plan directory, measurement file) of a measured plan directory or of a measurement file under any name.

    A file is a measurement (measured.json or a copy of it) whose plan.json is beside it.
    """
    p = Path(path)
    if p.is_file() or p.name == MEASURED_FILE:
        return p.parent, p
    return p, p / MEASURED_FILE


def load_sample(path: str | os.PathLike, *, profile: Profile | None = None,
                profiles: dict[str, Profile] | None = None) -> Sample:
    """One measured plan directory as a Sample.

    Args:
        path: the plan directory (or its measured.json).
        profile: use this profile instead of the one plan.json names.
        profiles: a cache of loaded profiles by path (shared across calls so each file is read once).

    Raises:
        SchemaError: a missing or malformed plan.json / measured.json, a measurement of another configuration,
            or a profile that is not a file (an analytic one: pass ``profile``).
    """
    plan_dir, measured_path = _measured_paths(path)
    plan_path = plan_dir / PLAN_FILE
    try:
        plan = json.loads(plan_path.read_text())
    except FileNotFoundError:
        raise SchemaError(f"{plan_path}: missing (is {plan_dir} a measured plan directory?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{plan_path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{plan_path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("config"), dict):
        raise SchemaError(f"{plan_path}: field 'config': expected the planned configuration object")
    try:
        config = ParallelConfig(**plan["config"])
    except TypeError as exc:
        raise SchemaError(f"{plan_path}: field 'config': {exc}") from None
    measured = load_measured(measured_path)
    ran = (measured.pp, measured.dp, measured.tp, measured.micro_batch_size, measured.num_microbatches)
    planned = (config.pp, config.dp, config.tp, config.micro_batch_size, config.num_microbatches)
    if ran != planned:
        raise SchemaError(f"{plan_dir}: measured.json ran pp/dp/tp/mbs/m {ran}, plan.json plans {planned}")
    if profile is None:
        profile = _plan_profile(plan, plan_path, profiles if profiles is not None else {})
    return Sample(label=plan.get("label") or str(plan_dir), profile=profile, config=config,
                  measured_ms=measured.median_step_ms)


def _plan_profile(plan: dict, plan_path: Path, cache: dict[str, Profile]) -> Profile:
    ref = plan.get("profile")
    if not isinstance(ref, str) or not ref:
        raise SchemaError(f"{plan_path}: field 'profile': missing; pass --profile")
    candidates = [Path(ref), plan_path.parent / ref]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise SchemaError(f"{plan_path}: profile {ref!r} is not a file here (an analytic profile?); pass --profile")
    key = str(found.resolve())
    if key not in cache:
        cache[key] = load_profile(found)
    return cache[key]
