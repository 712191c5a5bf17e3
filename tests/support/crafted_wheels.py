"""Crafted wheels that carry NVIDIA's package name and version but not NVIDIA's bytes.

What an attacker (or a broken mirror) puts on a pip find-links folder or index: a wheel named
``nvidia_cuda_nvrtc_cu12-12.9.86-...`` whose library is a stand-in built from
``broken_libs/fake_nvrtc.c``.  With ``CAPABLE`` the stand-in passes every check a remedy or
``fetch`` makes (soname, arch list, compiles), so only the pinned SHA-256 can tell it apart;
with ``CTOR_MARKER`` its constructor writes a file, which proves whether it was ever loaded.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from support.native_fakes import build

PACKAGE = "nvidia-cuda-nvrtc-cu12"
VERSION = "12.9.86"
#: A more specific platform tag than NVIDIA's manylinux_2_12 wheel: pip prefers it.
SPECIFIC_TAG = "cp311-cp311-manylinux_2_28_x86_64"
#: A build tag: pip prefers the higher build number of the same version.
BUILD_TAG = ("1", "py3-none-any")


def fake_nvrtc(folder: Path, *defines: str, soname: str = "libnvrtc.so.12") -> Path:
    """A stand-in NVRTC 12.9 that lists sm_120/sm_121 and compiles, with *defines* on top."""
    return build(
        "fake_nvrtc.c",
        folder / "libnvrtc.so.12",
        "CAPABLE",
        "VERSION_MAJOR=12",
        "VERSION_MINOR=9",
        *defines,
        soname=soname,
    )


def fake_builtins(folder: Path, *defines: str) -> Path:
    """A loadable stand-in for ``libnvrtc-builtins.so.12.9``."""
    return build("fake_nvrtc.c", folder / "libnvrtc-builtins.so.12.9", *defines)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def wheel(
    into: Path,
    members: dict[str, bytes],
    *,
    tag: str = SPECIFIC_TAG,
    build_tag: str | None = None,
    package: str = PACKAGE,
    version: str = VERSION,
) -> Path:
    """A well-formed wheel (METADATA, WHEEL, a RECORD that matches its members: a wheel's own
    RECORD proves nothing) holding *members*."""
    dist = package.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    parts = [dist, version, *([build_tag] if build_tag else []), tag]
    path = into / ("-".join(parts) + ".whl")
    files = dict(members)
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
    ).encode()
    wheel_text = f"Wheel-Version: 1.0\nGenerator: crafted\nRoot-Is-Purelib: true\nTag: {tag}\n"
    if build_tag:
        wheel_text += f"Build: {build_tag}\n"
    files[f"{info}/WHEEL"] = wheel_text.encode()
    record = [_record_line(name, data) for name, data in files.items()]
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    into.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def crafted_nvrtc_wheel(
    into: Path,
    work: Path,
    *,
    marker: Path | None = None,
    tag: str = SPECIFIC_TAG,
    build_tag: str | None = None,
    soname: str = "libnvrtc.so.12",
    builtins: bytes | None = None,
) -> Path:
    """A wheel named like NVIDIA's ``nvidia-cuda-nvrtc-cu12==12.9.86`` holding a capable
    stand-in NVRTC (whose constructor writes *marker*, when given) and a builtins library
    (*builtins*: other bytes in its place)."""
    defines = (f'CTOR_MARKER="{marker}"',) if marker is not None else ()
    library = fake_nvrtc(work / "lib", *defines, soname=soname)
    extra = builtins if builtins is not None else fake_builtins(work / "lib").read_bytes()
    members = {
        "nvidia/cuda_nvrtc/lib/libnvrtc.so.12": library.read_bytes(),
        "nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.9": extra,
    }
    return wheel(into, members, tag=tag, build_tag=build_tag)
