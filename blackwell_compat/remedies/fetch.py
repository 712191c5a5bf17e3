"""``fetch``: put a compiler that knows the GPU into the project's cache, for this torch build.

The compiler comes from NVIDIA's own wheel, downloaded with ``pip download --no-deps`` (or
given as a local file), and only the files the remedy needs are unpacked: the wheel is never
installed, so the user's environment and torch's pins stay as they are.  Every step happens in
a temporary folder; the cache (:mod:`blackwell_compat.remedies.cache`) gets the result only
after the files were checked against the wheel's RECORD and the compiler was verified
(NVRTC: loaded in a child process, its ``nvrtcGetSupportedArchs`` lists the archs and a small
kernel compiles for each; ptxas: ``--version`` runs and a trivial PTX assembles for each
``sm_XYa``), with the manifest written last and the folder renamed into place.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .. import children
from ..config import capability_to_arch
from ..probing.isolation import read_nvml, run_test_child
from ..probing.locate import locate_torch
from ..probing.nvrtc import info_from_dict
from ..probing.ptxas import probe_tool, triton_gpu_name
from . import cache

KINDS = ("nvrtc", "ptxas")
DEFAULT_ARCHS = ("sm_120", "sm_121")
"""Checked when no GPU is visible: RTX 50xx / RTX PRO 6000 and GB10, the archs older
compilers lack."""

_MAX_MEMBER = 1 << 30  # no compiler file is near 1 GiB; a bigger one is not what we want

# (kind, CUDA major) -> (package, version).  Versions measured to know sm_120/sm_121/sm_121a
# (docs/remedies.md).  CUDA 12: the release users fixed GB10 with; CUDA 13: a release newer
# than torch 2.11's pinned 13.0.88.
PACKAGES: dict[tuple[str, int], tuple[str, str]] = {
    ("nvrtc", 12): ("nvidia-cuda-nvrtc-cu12", "12.9.86"),
    ("nvrtc", 13): ("nvidia-cuda-nvrtc", "13.2.86"),
    ("ptxas", 12): ("nvidia-cuda-nvcc-cu12", "12.9.86"),
    ("ptxas", 13): ("nvidia-cuda-nvcc", "13.2.86"),
}
_WHEEL_NAMES = {
    "nvrtc": re.compile(r"nvidia_cuda_nvrtc(_cu\d+)?", re.ASCII),
    "ptxas": re.compile(r"nvidia_cuda_nvcc(_cu\d+)?", re.ASCII),
}
_WHEEL_FILE = re.compile(r"([A-Za-z0-9_.]+?)-([0-9]+(?:\.[0-9]+)*)-[^/\\]*\.whl", re.ASCII)
_VERSION = re.compile(r"[0-9]+(\.[0-9]+){1,3}", re.ASCII)
_PACKAGE_DIRS = r"nvidia/(?:cuda_nvrtc|cuda_nvcc|cu\d+)"


class FetchError(RuntimeError):
    """fetch could not complete; the cache is as it was."""


@dataclass(frozen=True)
class FetchResult:
    """What fetch did."""

    kind: str
    package: str
    version: str
    cuda_major: int
    wheel: str
    sha256: str
    origin: str  # "downloaded with pip (...)" or "local wheel ..."
    folder: str
    files: tuple[str, ...]
    archs: tuple[str, ...]
    checked: tuple[str, ...]  # one line per verification
    reused: bool = False  # already in the cache: nothing downloaded
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "package": self.package,
            "version": self.version,
            "cuda_major": self.cuda_major,
            "wheel": self.wheel,
            "sha256": self.sha256,
            "origin": self.origin,
            "folder": self.folder,
            "files": list(self.files),
            "archs": list(self.archs),
            "checked": list(self.checked),
            "reused": self.reused,
            "seconds": round(self.seconds, 2),
            "notes": list(self.notes),
        }


def torch_cuda_major() -> int:
    """The CUDA major of the installed torch build, read from its files (no ``import torch``)."""
    build = locate_torch()
    if not build.installed:
        raise FetchError(
            "torch is not installed here, so there is no CUDA build to match; give --cuda 12 or "
            "--cuda 13"
        )
    if build.cuda_major is None:
        raise FetchError(
            f"{build.describe()}: it uses no NVIDIA compiler; give --cuda 12 or --cuda 13 to "
            "fetch one anyway"
        )
    return build.cuda_major


def package_for(kind: str, cuda_major: int, version: str | None = None) -> tuple[str, str]:
    """``(package, version)`` that fetch downloads for *kind* and a CUDA major."""
    if kind not in KINDS:
        raise FetchError(f"unknown compiler {kind!r}: give one of {', '.join(KINDS)}")
    try:
        package, default = PACKAGES[(kind, cuda_major)]
    except KeyError:
        majors = sorted({major for k, major in PACKAGES if k == kind})
        raise FetchError(
            f"no {kind} package known for CUDA {cuda_major}; known: "
            + ", ".join(f"CUDA {m}" for m in majors)
        ) from None
    if version is None:
        return package, default
    if not _VERSION.fullmatch(version):
        raise FetchError(f"version {version!r} is not dotted numbers such as {default!r}")
    if int(version.split(".")[0]) != cuda_major:
        raise FetchError(
            f"{kind} {version} is not a CUDA {cuda_major} release (torch needs CUDA {cuda_major})"
        )
    return package, version


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


def _sha256(path: Path) -> str:
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


def unpack(wheel: Path, kind: str, cuda_major: int, into: Path) -> list[str]:
    """Copy only the files *kind* needs from *wheel* into *into*; the relative names written.

    Raises FetchError for a file that is not a zip, a member that is a link, an unsafe or
    missing member, or content that does not match the wheel's RECORD.
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
            if info.file_size > _MAX_MEMBER:
                raise FetchError(f"{wheel.name}: {member} is {info.file_size} bytes, too big")
            if dest == "libnvrtc-builtins":
                dest = PurePosixPath(member).name
            target = into.joinpath(*PurePosixPath(dest).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            try:
                with archive.open(info) as source, open(target, "xb") as out:
                    for block in iter(lambda: source.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise FetchError(f"{wheel.name}: {member} cannot be read: {exc}") from None
            expected = hashes.get(member)
            if expected is not None:
                got = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
                if got != expected.rstrip("="):
                    raise FetchError(f"{wheel.name}: {member} does not match the wheel's RECORD")
            os.chmod(target, 0o755)
            written.append(PurePosixPath(dest).as_posix())
    return written


def wheel_identity(wheel: Path, kind: str) -> tuple[str, str]:
    """``(distribution, version)`` from a wheel's file name, checked to be *kind*'s package."""
    match = _WHEEL_FILE.fullmatch(wheel.name)
    if match is None:
        raise FetchError(f"{wheel.name} is not a wheel file name (name-version-tags.whl)")
    dist, version = match.group(1), match.group(2)
    if not _WHEEL_NAMES[kind].fullmatch(dist.lower()):
        raise FetchError(
            f"{wheel.name} is not an NVIDIA {kind} wheel (expected "
            + " or ".join(sorted({p for k, (p, _) in PACKAGES.items() if k[0] == kind}))
            + ")"
        )
    return dist.lower().replace("_", "-"), version


def _pip_download(
    package: str, version: str, into: Path, python: str, timeout: float
) -> tuple[Path, str]:
    argv = children.python_argv(
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--dest",
        str(into),
        f"{package}=={version}",
        python=python,
    )
    shown = " ".join(["python", *argv[1:-3], f"{package}=={version}"])
    # pip must not start the library (AUTO) in its interpreter: a helper's environment
    done = children.run(argv, timeout=timeout, env=children.helper_env())
    if done.timed_out:
        raise FetchError(
            f"`{shown}` did not finish within {timeout:g} s; on a machine without network, "
            "download the wheel elsewhere and give --wheel FILE"
        )
    if not done.started:
        raise FetchError(f"cannot run {python} -m pip: {done.start_error}")
    text = (done.stdout + done.stderr).decode("utf-8", "replace")
    if done.returncode != 0:
        lines = [
            line.strip()
            for line in text.splitlines()
            if line.strip() and "is ignored: it is neither a file nor a directory" not in line
        ]
        if any("No module named pip" in line for line in lines):
            raise FetchError(f"pip is not installed for {python}; give --wheel FILE or --python")
        tail = " | ".join(lines[-3:]) or f"exit status {done.returncode}"
        raise FetchError(
            f"`{shown}` failed (no network, or the index lacks it?): {tail}; on a machine "
            "without network, download the wheel elsewhere and give --wheel FILE"
        )
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"`{shown}` left {len(wheels)} wheel files instead of one")
    return wheels[0], f"downloaded with `{shown}`"


def gpu_archs(timeout: float | None = None) -> list[str]:
    """The archs of the visible GPUs (NVML read in a child process), empty without any."""
    _, gpus = read_nvml(timeout=timeout)
    archs = []
    for gpu in gpus:
        if gpu.capability is not None:
            archs.append(capability_to_arch(*gpu.capability))
    return list(dict.fromkeys(archs))


def verify(
    kind: str, folder: Path, cuda_major: int, archs: Sequence[str], timeout: float
) -> tuple[list[str], list[str]]:
    """``(archs recorded in the manifest, lines saying what was checked)``; FetchError when
    the compiler in *folder* does not work or lacks one of *archs*."""
    if kind == "ptxas":
        path = str(folder / "bin" / "ptxas")
        names = [triton_gpu_name(a) for a in archs]
        probe = probe_tool(path, "ptxas", "fetched", names, timeout)
        if probe.error is not None:
            raise FetchError(f"the unpacked ptxas does not run: {probe.error}")
        refused = [n for n in names if not probe.accepts.get(n)]
        if refused:
            raise FetchError(
                f"the unpacked ptxas {probe.version} rejects "
                + "; ".join(f"{n} ({probe.errors.get(n, 'rejected')})" for n in refused)
            )
        lines = [f"`ptxas --version`: release {probe.version}"]
        lines += [f"assembled a trivial PTX with --gpu-name={n}" for n in names]
        return names, lines

    library = str(folder / f"libnvrtc.so.{cuda_major}")
    # run_test_child directly, not read_nvrtc: nothing is stored about a staging path
    outcome = run_test_child("nvrtc", library, timeout)
    if outcome.failure is not None or outcome.result is None:
        raise FetchError(
            f"the unpacked NVRTC: a child process that loaded it {outcome.what_happened()}"
        )
    info = info_from_dict(outcome.result, path=library, source="fetched")
    if info.error is not None or not info.supported_archs:
        raise FetchError(f"the unpacked NVRTC does not work: {info.error or 'no arch list'}")
    missing = [a for a in archs if a not in info.supported_archs]
    if missing:
        raise FetchError(
            f"the unpacked NVRTC {info.version_string} lacks {', '.join(missing)} (it lists "
            f"{', '.join(info.supported_archs)})"
        )
    lines = [
        f"loaded in a child process: NVRTC {info.version_string}, nvrtcGetSupportedArchs lists "
        + ", ".join(info.supported_archs)
    ]
    for arch in archs:
        outcome = run_test_child("compile", library, timeout, arch)
        result = outcome.result or {}
        if outcome.failure is not None or result.get("result") != 0:
            what = result.get("error") or result.get("log") or outcome.what_happened()
            raise FetchError(f"the unpacked NVRTC cannot compile for {arch}: {what}")
        lines.append(f"compiled a small kernel with --gpu-architecture={arch} (child process)")
    return list(info.supported_archs), lines


def _install(staging: Path, final: Path, force: bool) -> None:
    """Move the verified *staging* folder to *final* (renames within the kind folder)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    landing = Path(tempfile.mkdtemp(prefix=f".{final.name}-new-", dir=final.parent))
    old: Path | None = None
    try:
        for child in staging.iterdir():
            shutil.move(str(child), str(landing / child.name))
        if final.exists():
            if not force:
                raise FetchError(f"{final} appeared meanwhile; run again with --force")
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}-old-", dir=final.parent))
            os.replace(final, old / "entry")
        os.replace(landing, final)
    except BaseException:
        shutil.rmtree(landing, ignore_errors=True)
        if old is not None and not final.exists():
            os.replace(old / "entry", final)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def fetch(
    kind: str,
    *,
    cuda_major: int | None = None,
    version: str | None = None,
    wheel: str | os.PathLike[str] | None = None,
    force: bool = False,
    python: str | None = None,
    archs: Sequence[str] | None = None,
    timeout: float = 600.0,
) -> FetchResult:
    """Put *kind* (``nvrtc`` or ``ptxas``) into the cache; FetchError when it cannot, with the
    cache unchanged.  *archs* to verify default to the visible GPUs' (else sm_120, sm_121)."""
    started = time.monotonic()
    if kind not in KINDS:
        raise FetchError(f"unknown compiler {kind!r}: give one of {', '.join(KINDS)}")
    if sys.platform != "linux":
        raise FetchError(f"fetch supports Linux only (this is {sys.platform})")
    major = cuda_major if cuda_major is not None else torch_cuda_major()
    notes: list[str] = []
    local: Path | None = None
    if wheel is not None:
        local = Path(wheel).expanduser()
        if not local.is_file():
            raise FetchError(f"--wheel {local}: no such file")
        dist, wheel_version = wheel_identity(local, kind)
        package, version = package_for(kind, major, wheel_version)
        if dist != package:
            raise FetchError(f"{local.name} is {dist}, but CUDA {major} needs {package}")
    else:
        package, version = package_for(kind, major, version)
    if archs is None:
        found = gpu_archs(timeout=min(timeout, 60.0))
        targets = found or list(DEFAULT_ARCHS)
        notes.append(
            "checked the archs of the GPUs here: " + ", ".join(found)
            if found
            else "no GPU visible: checked " + ", ".join(DEFAULT_ARCHS)
        )
    else:
        targets = list(archs)
    final = cache.entry_folder(kind, version, major if kind == "nvrtc" else None)
    existing = cache.read_manifest(final)
    if existing is not None and existing.get("kind") == kind and not force:
        files = existing.get("files", [])
        return FetchResult(
            kind=kind,
            package=str(existing.get("package", package)),
            version=version,
            cuda_major=major,
            wheel=str(existing.get("wheel", "")),
            sha256=str(existing.get("sha256", "")),
            origin="already in the cache (give --force to fetch again)",
            folder=str(final),
            files=tuple(str(f) for f in files) if isinstance(files, list) else (),
            archs=tuple(str(a) for a in existing.get("archs", []) or []),
            checked=(),
            reused=True,
            seconds=time.monotonic() - started,
            notes=tuple(notes),
        )
    with tempfile.TemporaryDirectory(prefix="bc-fetch-") as tmp:
        work = Path(tmp)
        if local is None:
            download = work / "download"
            download.mkdir()
            path, origin = _pip_download(
                package, version, download, python or sys.executable, timeout
            )
        else:
            path, origin = local, f"local wheel {local}"
        sha = _sha256(path)
        staging = work / "entry"
        staging.mkdir()
        files = unpack(path, kind, major, staging)
        listed, checked = verify(kind, staging, major, targets, min(timeout, 120.0))
        manifest = {
            "kind": kind,
            "version": version,
            "package": package,
            "wheel": path.name,
            "sha256": sha,
            "archs": listed,
            "files": files,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cuda_major": major,
            "origin": origin,
        }
        (staging / cache.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        _install(staging, final, force)
        return FetchResult(
            kind=kind,
            package=package,
            version=version,
            cuda_major=major,
            wheel=path.name,
            sha256=sha,
            origin=origin,
            folder=str(final),
            files=tuple(files),
            archs=tuple(listed),
            checked=tuple(checked),
            seconds=time.monotonic() - started,
            notes=tuple(notes),
        )
