"""Fixtures for the validation tests: a small synthetic profile and the local cluster (helpers: pptune.testing)."""

from __future__ import annotations

import pytest

from pptune.hardware import load_cluster
from pptune.profile.schema import Profile
from pptune.testing.profiles import small_profile


@pytest.fixture
def profile() -> Profile:
    return small_profile()


@pytest.fixture
def cluster():
    return load_cluster("local-cpu")
