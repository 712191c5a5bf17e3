"""Broken native libraries for the isolation tests, built with the C compiler at test time.

The sources live in ``tests/support/broken_libs``; each variant is compiled into a folder of
its own under the test's temporary directory, named as the real library is, so the dynamic
loader and torch's preload find them exactly as they would find a broken install.  Tests that
need them skip only where no C compiler exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parent / "broken_libs"


def compiler() -> str | None:
    """``$CC``, ``cc`` or ``gcc``: the first that exists."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


def build(source: str, target: Path, *defines: str, soname: str | None = None) -> Path:
    """Compile ``broken_libs/<source>`` into the shared library *target* (``-D`` *defines*;
    *soname*: its ``DT_SONAME``, as the real library has one)."""
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler to build the broken libraries with")
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [cc, "-shared", "-fPIC", "-O0", "-o", str(target), str(SOURCES / source)]
    command += [f"-D{d}" for d in defines]
    if soname is not None:
        command.append(f"-Wl,-soname,{soname}")
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return target


def nvrtc_relative_path() -> Path:
    """Where the NVRTC wheel of the installed torch's CUDA puts the library, relative to
    site-packages: ``nvidia/cu13/lib/libnvrtc.so.13`` for CUDA 13 builds,
    ``nvidia/cuda_nvrtc/lib/libnvrtc.so.12`` for CUDA 12 builds."""
    from blackwell_compat.probing import locate_torch

    major = locate_torch().cuda_major or 13
    if major >= 13:
        return Path("nvidia", f"cu{major}", "lib", f"libnvrtc.so.{major}")
    return Path("nvidia", "cuda_nvrtc", "lib", f"libnvrtc.so.{major}")


def nvrtc_site(root: Path, *defines: str) -> tuple[Path, Path]:
    """A folder laid out like site-packages with the NVRTC of torch's CUDA in it:
    ``(site folder, library)``.  Put the folder on ``PYTHONPATH`` and torch's preload (and the
    probe) take that library."""
    library = build("fake_nvrtc.c", root / nvrtc_relative_path(), *defines)
    return root, library


def nvml_folder(root: Path, *defines: str) -> Path:
    """A folder holding ``libnvidia-ml.so.1``; put it on ``LD_LIBRARY_PATH``."""
    build("fake_nvml.c", root / "libnvidia-ml.so.1", *defines)
    return root


def truncated_copy(real: str, target: Path, size: int = 4096) -> Path:
    """The first *size* bytes of a real library, as a broken download leaves it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(real, "rb") as handle:
        target.write_bytes(handle.read(size))
    return target
