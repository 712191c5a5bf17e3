"""Real NVIDIA compiler wheels for the fetch and ptxas-remedy tests, downloaded once per session.

The package index is reachable in CI and here; when it is not, the tests that need a wheel fail
with a message saying so (they are not skipped: a skipped download would prove nothing).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

PTXAS_CU12 = ("nvidia-cuda-nvcc-cu12", "12.9.86")  # 40.5 MB, ptxas 12.9
NVRTC_CU13 = ("nvidia-cuda-nvrtc", "13.2.86")  # 47 MB, NVRTC 13.2

TIMINGS: dict[str, float] = {}


def download(package: str, version: str, into: Path) -> Path:
    """``pip download --no-deps`` one wheel (pip's cache makes a second session fast)."""
    into.mkdir(parents=True, exist_ok=True)
    found = sorted(into.glob("*.whl"))
    if found:
        return found[0]
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--dest",
            str(into),
            f"{package}=={version}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    TIMINGS[f"{package}=={version}"] = time.monotonic() - started
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise AssertionError(
            f"could not download {package}=={version} from the package index (these tests need "
            f"it; CI reaches the index): rc {done.returncode}\n{done.stdout[-2000:]}"
            f"\n{done.stderr[-2000:]}"
        )
    return wheels[0]
