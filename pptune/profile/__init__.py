"""Profiles: per-layer costs (measured by the profiler or derived analytically) and their JSON schema."""

from pptune.profile.schema import SCHEMA_VERSION, LayerProfile, LayerTiming, Profile, load_profile, save_profile

__all__ = ["SCHEMA_VERSION", "LayerProfile", "LayerTiming", "Profile", "load_profile", "save_profile"]
