"""The environment for child processes of the tests: none of the library's variables set."""

from __future__ import annotations

import os


def clean_env(**extra: str) -> dict[str, str]:
    """``os.environ`` without any ``BLACKWELL_COMPAT_*`` (or internal ``_BLACKWELL_COMPAT_*``)
    variable, plus *extra*."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BLACKWELL_COMPAT_", "_BLACKWELL_COMPAT_"))
    }
    env.update(extra)
    return env
