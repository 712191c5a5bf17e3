"""Reading an NVIDIA compiler wheel without installing it: which release its file name says it
is, whether its bytes are NVIDIA's (the SHA-256 pinned in :mod:`.pinned`), and the few members
``fetch`` unpacks, each checked (a link, an unsafe or duplicated name, a member bigger than
NVIDIA's own or holding other bytes than it declares, content that does not match the wheel's
RECORD: refused).  Nothing here runs or loads what it reads.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from . import pinned

__all__ = [
    "MEMBER_LIMITS",
    "FetchError",
    "allowed_hashes",
    "check_bytes",
    "sha256_of",
    "unpack",
    "wheel_identity",
]


class FetchError(RuntimeError):
    """fetch could not complete; the cache is as it was."""


#: The largest file of each kind NVIDIA's pinned wheels hold (x86_64 and aarch64, bytes), and
#: the most ``fetch`` unpacks (about twice that): a bigger member is no compiler of ours.
MEMBER_LIMITS: dict[str, tuple[int, int]] = {
    "libnvrtc.so": (115_333_336, 256 << 20),
    "libnvrtc-builtins": (7_202_760, 32 << 20),
    "bin/ptxas": (47_149_992, 128 << 20),
}
_WHEEL_NAMES = {
    "nvrtc": re.compile(r"nvidia_cuda_nvrtc(_cu\d+)?", re.ASCII),
    "ptxas": re.compile(r"nvidia_cuda_nvcc(_cu\d+)?", re.ASCII),
}
_WHEEL_FILE = re.compile(r"([A-Za-z0-9_.]+?)-([0-9]+(?:\.[0-9]+)*)-[^/\\]*\.whl", re.ASCII)
_PACKAGE_DIRS = r"nvidia/(?:cuda_nvrtc|cuda_nvcc|cu\d+)"


def _members(kind: str, cuda_major: int) -> dict[str, re.Pattern[str]]:
    """Destination name (relative to the entry folder) -> the wheel member it comes from."""
    if kind == "nvrtc":
        return {
            f"libnvrtc.so.{cuda_major}": re.compile(
                rf"{_PACKAGE_DIRS}/lib/libnvrtc\.so\.{cuda_major}", re.ASCII
            ),
            "libnvrtc-builtins": re.compile(
                rf"{_PACKAGE_DIRS}/lib/(libnvrtc-builtins\.so\.{cuda_major}\.[0-9]+)", re.ASCII
            ),
        }
    return {"bin/ptxas": re.compile(rf"{_PACKAGE_DIRS}/bin/ptxas", re.ASCII)}


def sha256_of(path: Path) -> str:
    """The SHA-256 of the file at *path*, as 64 hexadecimal digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _safe_name(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return (
        bool(parts)
        and not name.startswith("/")
        and "\\" not in name
        and ".." not in parts
        and ":" not in parts[0]
    )


def _record_hashes(archive: zipfile.ZipFile) -> dict[str, str]:
    """``member -> urlsafe-base64 sha256`` from the wheel's ``*.dist-info/RECORD``."""
    records = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/RECORD", n)]
    if len(records) != 1:
        return {}
    text = archive.read(records[0]).decode("utf-8", "replace")
    hashes = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[1].startswith("sha256="):
            hashes[row[0]] = row[1][len("sha256=") :]
    return hashes


def _limit_for(dest: str) -> tuple[int, int]:
    for prefix, limits in MEMBER_LIMITS.items():
        if dest.startswith(prefix):
            return limits
    raise KeyError(dest)  # pragma: no cover - every member of _members has a limit


def unpack(wheel: Path, kind: str, cuda_major: int, into: Path) -> list[str]:
    """Copy only the files *kind* needs from *wheel* into *into*; the relative names written.

    Raises FetchError for a file that is not a zip, a member that is a link, an unsafe, missing
    or duplicated member, one bigger than :data:`MEMBER_LIMITS` allows or whose real size is
    not the size it declares, or content that does not match the wheel's RECORD.  An
    ``OSError`` while writing (a full disk) propagates: it is about *into*, not the wheel.
    """
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FetchError(f"{wheel} is not a readable wheel (zip archive): {exc}") from None
    written: list[str] = []
    with archive:
        names = archive.namelist()
        hashes = _record_hashes(archive)
        for dest, pattern in _members(kind, cuda_major).items():
            matches = [n for n in names if pattern.fullmatch(n)]
            if not matches:
                raise FetchError(
                    f"{wheel.name} has no {pattern.pattern!r}: not a {kind} wheel for CUDA "
                    f"{cuda_major}"
                )
            if len(matches) > 1:
                raise FetchError(f"{wheel.name} has several files for {dest}: {matches}")
            member = matches[0]
            info = archive.getinfo(member)
            mode = info.external_attr >> 16
            if not _safe_name(member):
                raise FetchError(f"{wheel.name}: refusing the unsafe member name {member!r}")
            if stat.S_ISLNK(mode) or info.is_dir():
                raise FetchError(f"{wheel.name}: {member} is a link or a folder, not a file")
            real, limit = _limit_for(dest)
            if info.file_size > limit:
                raise FetchError(
                    f"{wheel.name}: {member} is {info.file_size} bytes; NVIDIA's is at most "
                    f"{real}, and fetch unpacks at most {limit}"
                )
            if dest == "libnvrtc-builtins":
                dest = PurePosixPath(member).name
            target = into.joinpath(*PurePosixPath(dest).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            size = 0
            with open(target, "xb") as out:
                try:
                    source = archive.open(info)
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                    raise FetchError(f"{wheel.name}: {member} cannot be read: {exc}") from None
                with source:
                    while True:
                        try:
                            block = source.read(1 << 20)
                        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                            raise FetchError(
                                f"{wheel.name}: {member} cannot be read: {exc}"
                            ) from None
                        if not block:
                            break
                        size += len(block)
                        if size > info.file_size or size > limit:
                            raise FetchError(
                                f"{wheel.name}: {member} holds more than the "
                                f"{info.file_size} bytes it declares"
                            )
                        digest.update(block)
                        out.write(block)
            if size != info.file_size:
                raise FetchError(
                    f"{wheel.name}: {member} holds {size} bytes, not the {info.file_size} it "
                    "declares"
                )
            expected = hashes.get(member)
            if expected is not None:
                got = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
                if got != expected.rstrip("="):
                    raise FetchError(f"{wheel.name}: {member} does not match the wheel's RECORD")
            os.chmod(target, 0o755)
            written.append(PurePosixPath(dest).as_posix())
    return written


def _packages(kind: str) -> list[str]:
    """The distributions of *kind* the project pins (``nvidia-cuda-nvrtc-cu12``, ...)."""
    names = {w.package for w in pinned.PINNED}
    return sorted(n for n in names if _WHEEL_NAMES[kind].fullmatch(n.replace("-", "_")))


def wheel_identity(wheel: Path, kind: str) -> tuple[str, str]:
    """``(distribution, version)`` from a wheel's file name, checked to be *kind*'s package."""
    match = _WHEEL_FILE.fullmatch(wheel.name)
    if match is None:
        raise FetchError(f"{wheel.name} is not a wheel file name (name-version-tags.whl)")
    dist, version = match.group(1), match.group(2)
    if not _WHEEL_NAMES[kind].fullmatch(dist.lower()):
        raise FetchError(
            f"{wheel.name} is not an NVIDIA {kind} wheel (expected "
            + " or ".join(_packages(kind))
            + ")"
        )
    return dist.lower().replace("_", "-"), version


def check_bytes(
    path: Path, package: str, version: str, trust_sha256: str | None
) -> tuple[str, bool, str]:
    """``(sha256, pinned, why it is trusted)`` of the wheel at *path*; FetchError naming what
    it got and what was expected when its bytes are neither NVIDIA's pinned wheel for this
    machine nor the one the user named."""
    sha = sha256_of(path)
    here = pinned.machine()
    known = pinned.pinned_sha256(sha)
    if known is not None:
        if (known.package, known.version) != (package, version):
            raise FetchError(
                f"{path.name} is NVIDIA's {known.package}=={known.version} ({known.filename}), "
                f"but this fetch needs {package}=={version}"
            )
        if known.machine != here:
            raise FetchError(
                f"{path.name} is NVIDIA's wheel for {known.machine} ({known.filename}); this "
                f"machine is {here}"
            )
        return sha, True, f"sha256 pinned by blackwell-compat: NVIDIA's {known.filename}"
    if trust_sha256 is not None:
        if sha != trust_sha256:
            raise FetchError(
                f"{path.name}: got sha256 {sha}, expected {trust_sha256} (--trust-sha256); "
                "refused, nothing was unpacked"
            )
        return sha, False, "sha256 named by the user (--trust-sha256); not pinned by the project"
    expected = [w for w in pinned.pinned_for(package, version) if w.machine == here]
    if expected:
        wheel = expected[0]
        raise FetchError(
            f"{path.name}: got sha256 {sha}, expected {wheel.sha256} ({wheel.filename}, "
            f"NVIDIA's published {package}=={version} for {here}): not NVIDIA's wheel; refused, "
            "nothing was unpacked"
        )
    raise FetchError(
        f"{path.name} (sha256 {sha}): blackwell-compat pins no sha256 for {package}=={version} "
        f"on {here} ({_pinned_list()}); to take this wheel anyway, check where it comes from "
        "and give --trust-sha256 with its sha256"
    )


def _pinned_list() -> str:
    releases = dict.fromkeys(f"{w.package}=={w.version}" for w in pinned.PINNED)
    return "pinned: " + ", ".join(releases)


def allowed_hashes(package: str, version: str, trust_sha256: str | None) -> list[str]:
    """The SHA-256 values pip may accept for a download on this machine."""
    here = pinned.machine()
    found = [w.sha256 for w in pinned.pinned_for(package, version) if w.machine == here]
    if trust_sha256 is not None:
        found.append(trust_sha256)
    if not found:
        raise FetchError(
            f"blackwell-compat pins no sha256 for {package}=={version} on {here} "
            f"({_pinned_list()}), so it cannot tell NVIDIA's wheel from another; to fetch it "
            "anyway, check the wheel's sha256 where NVIDIA publishes it and give --trust-sha256"
        )
    return list(dict.fromkeys(found))
