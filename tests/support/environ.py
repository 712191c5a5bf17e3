"""The environment for child processes of the tests: none of the library's variables set."""

from __future__ import annotations

import os


def clean_env(**extra: str) -> dict[str, str]:
    """``os.environ`` without any ``BLACKWELL_COMPAT_*`` (or internal ``_BLACKWELL_COMPAT_*``)
    variable, plus *extra*.

    Except ``BLACKWELL_COMPAT_NVRTC=off``, as in the test process (tests/conftest.py): a CUDA
    toolkit on the test machine would otherwise serve every emulated arch through the NVRTC
    remedy, and no emulated op would fail.  The remedy's own tests pass their own value.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BLACKWELL_COMPAT_", "_BLACKWELL_COMPAT_"))
    }
    env["BLACKWELL_COMPAT_NVRTC"] = "off"
    env.update(extra)
    return env
