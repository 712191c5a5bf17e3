"""Fetch the real NVRTC libraries the probe tests read: ``python fetch_nvrtc.py DEST``.

Each version is installed with ``pip install --no-deps --target DEST/<version>`` from the
ordinary package registry.  A version whose folder is complete is skipped, so running the script
again is cheap; an install goes to a temporary folder first and is renamed into place only when
pip succeeded, so an interrupted or concurrent run never leaves a half-filled folder behind.

Exit status: 0 when every version is present afterwards, 1 otherwise (pip's output is shown
only for the versions that failed).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

# version folder -> pip requirement
WHEELS: dict[str, str] = {
    "12.6.77": "nvidia-cuda-nvrtc-cu12==12.6.77",
    "12.8.93": "nvidia-cuda-nvrtc-cu12==12.8.93",
    "12.9.86": "nvidia-cuda-nvrtc-cu12==12.9.86",
    "13.0.88": "nvidia-cuda-nvrtc==13.0.88",
}

_MARKER = ".fetched"


def library_in(folder: str) -> str | None:
    """The NVRTC shared library inside an installed version folder, or ``None``."""
    patterns = (
        os.path.join(folder, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.*[0-9]"),
        os.path.join(folder, "nvidia", "cu*", "lib", "libnvrtc.so.*[0-9]"),
        os.path.join(folder, "nvidia", "cuda_nvrtc", "bin", "nvrtc64_*.dll"),
        os.path.join(folder, "nvidia", "cu*", "bin", "**", "nvrtc64_*.dll"),
    )
    for pattern in patterns:
        found = sorted(glob.glob(pattern, recursive=True))
        if found:
            return found[0]
    return None


def is_complete(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, _MARKER)) and library_in(folder) is not None


def fetch_one(dest: str, version: str, requirement: str) -> tuple[bool, str]:
    target = os.path.join(dest, version)
    if is_complete(target):
        return True, ""
    staging = tempfile.mkdtemp(prefix=f".{version}-", dir=dest)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--no-deps",
        "--target",
        staging,
        requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or library_in(staging) is None:
        shutil.rmtree(staging, ignore_errors=True)
        return False, (result.stdout + result.stderr).strip() or "no NVRTC library installed"
    with open(os.path.join(staging, _MARKER), "w", encoding="utf-8") as marker:
        marker.write(requirement + "\n")
    if os.path.isdir(target):
        if is_complete(target):  # another run finished first
            shutil.rmtree(staging, ignore_errors=True)
            return True, ""
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not is_complete(target):
            return False, f"could not move the install into {target}"
    return True, ""


def fetch(dest: str, versions: dict[str, str] | None = None) -> dict[str, str]:
    """Install every missing version under *dest*; return ``{version: error}`` for failures."""
    os.makedirs(dest, exist_ok=True)
    failures: dict[str, str] = {}
    for version, requirement in (versions or WHEELS).items():
        ok, message = fetch_one(dest, version, requirement)
        if not ok:
            failures[version] = message
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", help="folder that receives one sub-folder per NVRTC version")
    args = parser.parse_args(argv)
    failures = fetch(os.path.abspath(args.dest))
    for version, message in failures.items():
        print(f"fetch_nvrtc: {WHEELS[version]} failed:\n{message}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
