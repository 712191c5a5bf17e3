"""The sha256 of NVIDIA's published compiler wheels: the only bytes ``fetch`` accepts.

A wheel's own ``RECORD`` proves nothing about who built it: anyone can write one.  What proves
that a wheel is NVIDIA's is its SHA-256 being the one NVIDIA published on PyPI for that file,
so the project ships those values, per package, version and platform, and ``fetch`` refuses
any other bytes, downloaded (pip checks the hashes itself, ``--require-hashes``) or given with
``--wheel``.  A wheel the project has no value for is fetched only when the user names its
SHA-256 (``--trust-sha256``), which the report and the manifest then record.

The values were read from PyPI's simple index (the ``#sha256=`` fragment of each file) and
checked by downloading each wheel and hashing it (docs/remedies.md, "Trust").
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

__all__ = ["PINNED", "PinnedWheel", "machine", "pinned_for", "pinned_sha256"]


@dataclass(frozen=True)
class PinnedWheel:
    """One wheel NVIDIA published, as PyPI lists it."""

    package: str
    version: str
    machine: str
    """``x86_64`` or ``aarch64`` (``platform.machine()``)."""
    filename: str
    sha256: str


def _wheel(package: str, version: str, machine: str, tag: str, sha256: str) -> PinnedWheel:
    name = f"{package.replace('-', '_')}-{version}-py3-none-{tag}.whl"
    return PinnedWheel(package, version, machine, name, sha256)


_X86_12 = "manylinux2010_x86_64.manylinux_2_12_x86_64"
_X86_17 = "manylinux2014_x86_64.manylinux_2_17_x86_64"
_ARM_17 = "manylinux2014_aarch64.manylinux_2_17_aarch64"

#: Every wheel ``fetch`` accepts without ``--trust-sha256`` (``fetch.PACKAGES``' releases).
PINNED: tuple[PinnedWheel, ...] = (
    _wheel(
        "nvidia-cuda-nvrtc-cu12",
        "12.9.86",
        "x86_64",
        _X86_12,
        "210cf05005a447e29214e9ce50851e83fc5f4358df8b453155d5e1918094dcb4",
    ),
    _wheel(
        "nvidia-cuda-nvrtc-cu12",
        "12.9.86",
        "aarch64",
        _ARM_17,
        "096d4de6bda726415dfaf3198d4f5c522b8e70139c97feef5cd2ca6d4cd9cead",
    ),
    _wheel(
        "nvidia-cuda-nvcc-cu12",
        "12.9.86",
        "x86_64",
        _X86_12,
        "5d6a0d32fdc7ea39917c20065614ae93add6f577d840233237ff08e9a38f58f0",
    ),
    _wheel(
        "nvidia-cuda-nvcc-cu12",
        "12.9.86",
        "aarch64",
        _ARM_17,
        "44e1eca4d08926193a558d2434b1bf83d57b4d5743e0c431c0c83d51da1df62b",
    ),
    _wheel(
        "nvidia-cuda-nvrtc",
        "13.2.86",
        "x86_64",
        _X86_12,
        "8111c5130e967b78222ea2124145f8efe9ce201b752b2579a2513100a53be1c5",
    ),
    _wheel(
        "nvidia-cuda-nvrtc",
        "13.2.86",
        "aarch64",
        _ARM_17,
        "1e5d7b411a2eb83f5c71c98d58133a763fc9fa86a4241ee320c5c4782d9ad1fd",
    ),
    _wheel(
        "nvidia-cuda-nvcc",
        "13.2.86",
        "x86_64",
        _X86_17,
        "7d3f56c8d705bad35bbba69eb0470d90856fd5d4dc48c6a6173aaf1e9f887cf5",
    ),
    _wheel(
        "nvidia-cuda-nvcc",
        "13.2.86",
        "aarch64",
        _ARM_17,
        "909140a1f942b943982b2eff120e618c94e29d75d9e33f5cd074f0e64eb411e8",
    ),
)

_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def machine() -> str:
    """This machine as the pins name it: ``x86_64`` or ``aarch64`` (else ``platform.machine()``)."""
    found = platform.machine()
    return _MACHINES.get(found.lower(), found)


def pinned_for(package: str, version: str) -> list[PinnedWheel]:
    """The pinned wheels of one release, every platform."""
    return [w for w in PINNED if w.package == package and w.version == version]


def pinned_sha256(sha256: str) -> PinnedWheel | None:
    """The pinned wheel whose SHA-256 this is, if any."""
    for wheel in PINNED:
        if wheel.sha256 == sha256.lower():
            return wheel
    return None
