"""Fixtures for the validation tests: a small synthetic profile and the local cluster (helpers: pptune.testing)."""

from __future__ import annotations

import pytest

from pptune.hardware import load_cluster
from pptune.profile.schema import Profile
from pptune.testing.profiles import TINY, TINY_SPEC, small_profile
from pptune.testing.records import fake_measured, record

# Re-exported until the last test files importing them from here switch to pptune.testing (tests import no
# test file); new code imports pptune.testing.profiles / .records.
__all__ = ["TINY", "TINY_SPEC", "fake_measured", "record", "small_profile"]


@pytest.fixture
def profile() -> Profile:
    return small_profile()


@pytest.fixture
def cluster():
    return load_cluster("local-cpu")
