"""The pinned SHA-256 of NVIDIA's compiler wheels (blackwell_compat/remedies/pinned.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from support.compiler_wheels import NVRTC_CU13, PTXAS_CU12, download

from blackwell_compat.remedies import pinned
from blackwell_compat.remedies.fetch import PACKAGES


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_pinned_wheels_are_the_ones_nvidia_published(tmp_path_factory) -> None:
    """The pins against the bytes PyPI serves (the wheels the tests download for this
    machine); every release fetch offers is pinned for x86_64 and aarch64, each value once."""
    for package, version in (PTXAS_CU12, NVRTC_CU13):
        downloaded = download(package, version, tmp_path_factory.mktemp("wheel"))
        known = pinned.pinned_sha256(_sha(downloaded))
        assert known is not None, f"{downloaded.name} is not pinned"
        assert known.filename == downloaded.name and known.machine == pinned.machine()
        assert (known.package, known.version) == (package, version)
    for package, version in PACKAGES.values():
        machines = sorted(w.machine for w in pinned.pinned_for(package, version))
        assert machines == ["aarch64", "x86_64"], (package, version)
    assert len({w.sha256 for w in pinned.PINNED}) == len(pinned.PINNED) == 8


def test_this_machine_is_named_as_the_pins_name_it(monkeypatch) -> None:
    import platform

    for found, named in (
        ("x86_64", "x86_64"),
        ("AMD64", "x86_64"),
        ("aarch64", "aarch64"),
        ("arm64", "aarch64"),
        ("ppc64le", "ppc64le"),
    ):
        monkeypatch.setattr(platform, "machine", lambda found=found: found)
        assert pinned.machine() == named
    assert pinned.pinned_sha256("0" * 64) is None
