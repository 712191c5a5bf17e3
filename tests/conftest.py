"""Shared fixtures.  Sections are owned by the modules they serve; keep them separate."""

from __future__ import annotations

import os

import pytest

# -- engine state (core) ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_blackwell_state():
    """Every test starts and ends with nothing patched and no emulation."""
    from blackwell_compat import engine

    before = {
        k: os.environ.get(k) for k in ("BLACKWELL_COMPAT_DISABLE", "BLACKWELL_COMPAT_STRATEGY")
    }
    yield
    engine._reset_for_tests()
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
