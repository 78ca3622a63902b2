"""Does a plan run the way its profile was timed? The dtype a plan takes by default, and the mismatches it names.

A measured profile's timings are used as they are: the cost model does not convert an fp32 profile into bf16
times, nor 2-thread CPU times into 1-thread ones. A plan made from a profile therefore trains in the profile's
dtype unless told otherwise (``default_dtype``), and a plan or estimate whose run differs from how its profile
was timed says so in one line per difference (``runtime_mismatches``): an explicit ``--dtype`` other than the
profile's, or a CPU profile timed with more or fewer threads than a rank of the run gets
(``pptune.runtime.threads.CPU_THREADS_PER_RANK``). Torch-free.
"""

from __future__ import annotations

import sys

from pptune.profile.schema import Profile, load_profile
from pptune.runtime.threads import CPU_THREADS_PER_RANK

DEFAULT_DTYPE = "bf16"  # a preset or spec string (analytic profile): what large-model training uses


def measured_profile(model_or_profile: str) -> Profile | None:
    """The measured profile ``model_or_profile`` names, or None (a preset, a spec string, an analytic file).

    Raises:
        SchemaError: a ``.json`` that is missing or malformed (the one-line error the planner would give too).
    """
    if not model_or_profile.endswith(".json"):
        return None
    profile = load_profile(model_or_profile)
    return profile if profile.source == "measured" else None


def default_dtype(model_or_profile: str, given: str | None) -> str:
    """``given`` when the user chose a dtype; else the measured profile's own dtype; else bf16."""
    if given is not None:
        return given
    profile = measured_profile(model_or_profile)
    return profile.dtype if profile is not None else DEFAULT_DTYPE


def runtime_mismatches(profile: Profile | None, *, dtype: str, origin: str) -> list[str]:
    """One line per way a run in ``dtype`` differs from how the measured ``profile`` was timed (empty: none).

    Args:
        profile: the measured profile (None: analytic, nothing to compare).
        dtype: the precision the plan trains in.
        origin: how to name the profile in the lines (its path).
    """
    if profile is None or profile.source != "measured":
        return []
    lines = []
    if profile.dtype != dtype:
        lines.append(f"{origin} was timed in {profile.dtype} but the plan trains in {dtype}: its timings are used "
                     f"as they are (profile with --dtype {dtype}, or plan without --dtype)")
    if profile.device == "cpu" and profile.threads is not None and profile.threads != CPU_THREADS_PER_RANK:
        lines.append(f"{origin} was timed with {profile.threads} CPU threads but each rank of a CPU run gets "
                     f"{CPU_THREADS_PER_RANK}: re-profile with --threads {CPU_THREADS_PER_RANK} (the default)")
    return lines


def warn_mismatches(model_or_profile: str, *, dtype: str, command: str) -> None:
    """Print ``runtime_mismatches`` of ``model_or_profile`` on stderr, ``pptune COMMAND: note: ...`` each."""
    for line in runtime_mismatches(measured_profile(model_or_profile), dtype=dtype, origin=model_or_profile):
        print(f"pptune {command}: note: {line}", file=sys.stderr)
