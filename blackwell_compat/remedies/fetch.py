"""``fetch``: put a compiler that knows the GPU into the project's cache, for this torch build.

The compiler comes from NVIDIA's own wheel, and only from it: the wheel's SHA-256 must be the
one NVIDIA published for it, which the project pins per package, version and platform
(:mod:`.pinned`, checked by :mod:`.wheel`; a wheel's own RECORD proves nothing about who built
it). It is downloaded with ``pip download --no-deps --require-hashes`` (pip refuses other
bytes), or given as a local file (``--wheel``, checked the same way); a wheel the project pins
nothing for is taken only when the user names its SHA-256 (``--trust-sha256``), which the report
and the manifest record. Only the files the remedy needs are unpacked, each with a size limit:
the wheel is never installed, so the user's environment and torch's pins stay as they are.

Every step happens in a private folder inside the cache (``.fetch-*``, under a lock, so two
fetches at once both end well, and leftovers of a killed fetch are removed by the next one);
the cache (:mod:`blackwell_compat.remedies.cache`) gets the result only after the compiler
passed everything the remedy will check (NVRTC: :func:`blackwell_compat.remedies.nvrtc.judge`,
its soname, its builtins library, its arch list and a compile for each arch, in child
processes; ptxas: ``--version`` runs and a trivial PTX assembles for each ``sm_XYa``), with
the manifest written last and the folder renamed into place.  An entry already in the cache is
checked the same way before it is called "already in the cache"; a broken one is fetched again.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import children, config, trusted
from ..config import capability_to_arch
from ..probing.isolation import read_nvml
from ..probing.locate import locate_torch
from ..probing.ptxas import probe_tool, triton_gpu_name, triton_location
from . import cache
from . import nvrtc as nvrtc_remedy
from .ptxas import triton_accepts_release
from .wheel import FetchError, allowed_hashes, check_bytes, unpack, wheel_identity

if sys.platform != "win32":  # fetch is Linux-only; the module still imports everywhere
    import fcntl

__all__ = [
    "DEFAULT_ARCHS",
    "KINDS",
    "PACKAGES",
    "FetchError",
    "FetchResult",
    "fetch",
    "gpu_archs",
    "package_for",
    "torch_cuda_major",
    "unpack",
    "verify",
    "wheel_identity",
]

KINDS = ("nvrtc", "ptxas")
DEFAULT_ARCHS = ("sm_120", "sm_121")
"""Checked when no GPU is visible: RTX 50xx / RTX PRO 6000 and GB10, the archs older
compilers lack."""

_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_LOCK_NAME = ".fetch.lock"
_LEFTOVER = re.compile(r"\.(fetch-.*|.*-(new|old)-.*)")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

# (kind, CUDA major) -> (package, version).  Versions measured to know sm_120/sm_121/sm_121a
# (docs/remedies.md).  CUDA 12: the release users fixed GB10 with; CUDA 13: a release newer
# than torch 2.11's pinned 13.0.88.
PACKAGES: dict[tuple[str, int], tuple[str, str]] = {
    ("nvrtc", 12): ("nvidia-cuda-nvrtc-cu12", "12.9.86"),
    ("nvrtc", 13): ("nvidia-cuda-nvrtc", "13.2.86"),
    ("ptxas", 12): ("nvidia-cuda-nvcc-cu12", "12.9.86"),
    ("ptxas", 13): ("nvidia-cuda-nvcc", "13.2.86"),
}
_VERSION = re.compile(r"[0-9]+(\.[0-9]+){1,3}", re.ASCII)


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
    pinned: bool = True
    """Whether the wheel's SHA-256 is one the project pins (else the user named it)."""
    trust: str = ""
    """Why its bytes were accepted, in words."""
    unusable: str | None = None
    """Why the remedy will not use it here (a ptxas the installed Triton refuses), or None."""

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
            "pinned": self.pinned,
            "trust": self.trust,
            "unusable": self.unusable,
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


def _pip_download(
    package: str,
    version: str,
    hashes: Sequence[str],
    into: Path,
    python: str,
    timeout: float,
) -> tuple[Path, str]:
    """``pip download`` one wheel in hash-checking mode: pip refuses any file whose SHA-256 is
    not one of *hashes*.  Its temporary files go to *into* as well (``TMPDIR``), so a killed
    fetch leaves nothing outside the cache's work folder."""
    requirements = into / "requirements.txt"
    requirements.write_text(
        f"{package}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes) + "\n",
        encoding="ascii",
    )
    download = into / "download"
    download.mkdir()
    scratch = into / "tmp"
    scratch.mkdir()
    argv = children.python_argv(
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "--disable-pip-version-check",
        "--no-input",
        "--dest",
        str(download),
        "-r",
        str(requirements),
        python=python,
    )
    shown = (
        f"python -I -m pip download --no-deps --only-binary=:all: --require-hashes "
        f"{package}=={version}"
    )
    # pip must not start the library (AUTO) in its interpreter: a helper's environment
    env = children.helper_env(set_={"TMPDIR": str(scratch)})
    done = children.run(argv, timeout=timeout, env=env, cwd=str(into))
    if done.timed_out:
        raise FetchError(
            f"`{shown}` did not finish within {timeout:g} s; on a machine without network, "
            "download the wheel elsewhere and give --wheel FILE"
        )
    if not done.started:
        raise FetchError(f"cannot run {python} -m pip: {done.start_error}")
    text = done.stdout_text + done.stderr.decode("utf-8", "replace")
    if done.returncode != 0:
        lines = [
            line.strip()
            for line in text.splitlines()
            if line.strip() and "is ignored: it is neither a file nor a directory" not in line
        ]
        if any("No module named pip" in line for line in lines):
            raise FetchError(f"pip is not installed for {python}; give --wheel FILE or --python")
        mismatch = _hash_mismatch(lines, hashes)
        if mismatch is not None:
            raise FetchError(mismatch)
        tail = " | ".join(lines[-3:]) or f"exit status {done.returncode}"
        raise FetchError(
            f"`{shown}` failed (no network, or the index lacks it?): {tail}; on a machine "
            "without network, download the wheel elsewhere and give --wheel FILE"
        )
    wheels = sorted(download.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"`{shown}` left {len(wheels)} wheel files instead of one")
    return wheels[0], f"downloaded with `{shown}`"


def _hash_mismatch(lines: Sequence[str], hashes: Sequence[str]) -> str | None:
    """pip's refusal of a file whose hash is not allowed, as one line naming what it got and
    what was expected; ``None`` when pip failed for another reason."""
    text = " ".join(lines)
    if "DO NOT MATCH THE HASHES" not in text:
        return None
    got = re.search(r"Got\s+([0-9a-f]{64})", text)
    name = re.search(r"([A-Za-z0-9_.\-]+\.whl)", text)
    return (
        f"pip downloaded {name.group(1) if name else 'a wheel'} whose sha256 is "
        f"{got.group(1) if got else '(not shown)'}, expected {' or '.join(hashes)}: not "
        "NVIDIA's published wheel (a wheel with the same name on an index or find-links folder "
        "pip uses?); refused, nothing was unpacked"
    )


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
    ok, why, info = nvrtc_remedy.judge(
        library, nvrtc_remedy.soname_for(cuda_major), archs, source="fetched", fresh=True
    )
    if not ok or info is None:
        raise FetchError(f"the unpacked NVRTC fails what the NVRTC remedy checks: {why}")
    version = info.version_string or ""
    lines = [
        f"soname {nvrtc_remedy.soname_for(cuda_major)}, as torch opens it",
        f"loaded in a child process: NVRTC {version}, nvrtcGetSupportedArchs lists "
        + ", ".join(info.supported_archs),
    ]
    lines += [
        f"compiled a small kernel with --gpu-architecture={arch} with "
        f"libnvrtc-builtins.so.{version} loaded first (child process)"
        for arch in archs
    ]
    return list(info.supported_archs), lines


def _install(staging: Path, final: Path) -> None:
    """Move the verified *staging* folder to *final*, replacing what is there (the caller
    holds the cache lock and checked that it is broken, or was asked to ``--force``)."""
    landing = Path(tempfile.mkdtemp(prefix=f".{final.name}-new-", dir=final.parent))
    old: Path | None = None
    try:
        for child in staging.iterdir():
            os.replace(child, landing / child.name)
        if os.path.lexists(final):
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}-old-", dir=final.parent))
            os.replace(final, old / "entry")
        os.replace(landing, final)
    except BaseException:
        shutil.rmtree(landing, ignore_errors=True)
        if old is not None and not os.path.lexists(final):
            os.replace(old / "entry", final)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _locked(folder: Path, timeout: float) -> Iterator[None]:
    """Hold the cache's fetch lock for *folder* (one fetch at a time writes there; a second
    one waits, then finds the first one's entry)."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(folder / _LOCK_NAME, flags, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FetchError(
                        f"another fetch has been writing to {folder} for {timeout:g} s; try "
                        "again when it has finished"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


def _clean_leftovers(folder: Path) -> list[str]:
    """Remove what killed fetches left in *folder* (their ``.fetch-*`` work folders and
    half-renamed ``.<version>-new-*``/``-old-*`` folders); called with the lock held, so
    nothing removed is in use.  The names removed."""
    removed: list[str] = []
    try:
        children_ = list(folder.iterdir())
    except OSError:
        return removed
    for child in children_:
        if _LEFTOVER.fullmatch(child.name) and child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    return removed


def _disk_error(exc: OSError, where: Path) -> FetchError:
    """One line for a failed write: a full disk says so."""
    what = exc.strerror or str(exc)
    if exc.errno in _DISK_FULL:
        return FetchError(
            f"writing to {where} failed: {what}; free some space (or point "
            f"{config.CACHE_DIR} elsewhere) and run fetch again"
        )
    name = f" {exc.filename}" if exc.filename else ""
    return FetchError(f"writing{name} in {where} failed: {what}")


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
    trust_sha256: str | None = None,
) -> FetchResult:
    """Put *kind* (``nvrtc`` or ``ptxas``) into the cache; FetchError when it cannot, with the
    cache unchanged.  *archs* to verify default to the visible GPUs' (else sm_120, sm_121).
    *trust_sha256*: the SHA-256 of a wheel the project pins nothing for, which the user checked
    (recorded as such)."""
    started = time.monotonic()
    if kind not in KINDS:
        raise FetchError(f"unknown compiler {kind!r}: give one of {', '.join(KINDS)}")
    if sys.platform != "linux":
        raise FetchError(f"fetch supports Linux only (this is {sys.platform})")
    trusted_sha = _sha256_argument(trust_sha256)
    major = cuda_major if cuda_major is not None else torch_cuda_major()
    notes: list[str] = []
    local: Path | None = None
    identity: tuple[str, bool, str] | None = None
    if wheel is not None:
        local = Path(os.path.abspath(os.path.expanduser(os.fspath(wheel))))
        if not local.is_file():
            raise FetchError(f"--wheel {local}: no such file")
        dist, wheel_version = wheel_identity(local, kind)
        package, version = package_for(kind, major, wheel_version)
        if dist != package:
            raise FetchError(f"{local.name} is {dist}, but CUDA {major} needs {package}")
        identity = check_bytes(local, package, version, trusted_sha)  # before anything else
    else:
        package, version = package_for(kind, major, version)
        allowed_hashes(package, version, trusted_sha)  # refuse before anything is written
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
    refused = trusted.cache_folders().refused
    notes += [
        f"{line}; this fetch uses the private fallback" for line in refused if "cache" in line
    ]
    try:
        final = cache.entry_folder(kind, version, major if kind == "nvrtc" else None)
        folder = trusted.make_private_folder(final.parent)
    except OSError as exc:
        raise FetchError(f"no cache folder may be written: {exc.strerror or exc}") from None
    final = folder / final.name
    try:
        with _locked(folder, timeout):
            removed = _clean_leftovers(folder)
            if removed:
                notes.append(f"removed what an interrupted fetch left: {', '.join(removed)}")
            done = _fetch_locked(
                kind,
                major,
                package,
                version,
                final,
                local=local,
                identity=identity,
                force=force,
                python=_interpreter(python),
                targets=targets,
                timeout=timeout,
                trusted_sha=trusted_sha,
                notes=notes,
                started=started,
            )
    except OSError as exc:
        raise _disk_error(exc, folder) from None
    if kind == "ptxas":
        unusable = triton_refuses(version, min(timeout, 60.0))
        if unusable is not None:
            done = replace(done, notes=(*done.notes, f"WARNING: {unusable}"), unusable=unusable)
    return done


def triton_refuses(version: str, timeout: float = 60.0) -> str | None:
    """Why the installed Triton will not use a ptxas of *version* (the ptxas remedy's gate,
    asked of Triton itself in a child process), or ``None`` when it will, cannot be asked, or
    Triton is not installed.  Triton 3.2 refuses every release newer than 12.6, so a cached
    12.9 ptxas can never serve it: ``fetch ptxas`` says so instead of implying it helps."""
    location = triton_location()
    if location is None:
        return None
    release = ".".join(version.split(".")[:2])
    ok, answer = triton_accepts_release(location, release, timeout)
    if ok:
        return None
    return (
        f"this will not help torch.compile here: {answer}. The ptxas remedy never "
        "points Triton at a ptxas it refuses; Triton comes with torch, so upgrade torch (its "
        "CUDA 13.0 builds bring a Triton that accepts a CUDA 13 ptxas)"
    )


def _interpreter(python: str | None) -> str:
    """The interpreter whose pip downloads, as an absolute path: this one by default; a bare
    name is looked up in the absolute ``PATH`` entries only (never the working directory)."""
    if python is None:
        return sys.executable
    if os.sep not in python:
        found = trusted.find_tool(python)
        if found is None:
            raise FetchError(
                f"--python {python!r}: not found in the absolute folders of PATH; give its path"
            )
        return found
    return os.path.abspath(os.path.expanduser(python))


def _sha256_argument(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    if not _SHA256.fullmatch(text):
        raise FetchError(
            f"--trust-sha256 {value!r} is not a SHA-256: give the 64 hexadecimal digits of the "
            "wheel's sha256 (`sha256sum FILE.whl`)"
        )
    return text


def _fetch_locked(
    kind: str,
    major: int,
    package: str,
    version: str,
    final: Path,
    *,
    local: Path | None,
    identity: tuple[str, bool, str] | None,
    force: bool,
    python: str,
    targets: list[str],
    timeout: float,
    trusted_sha: str | None,
    notes: list[str],
    started: float,
) -> FetchResult:
    existing = cache.read_manifest(final)
    if existing is not None and existing.get("kind") == kind and not force:
        problem = _recheck(kind, final, major, targets, min(timeout, 120.0))
        if problem is None:
            files = existing.get("files", [])
            return FetchResult(
                kind=kind,
                package=str(existing.get("package", package)),
                version=version,
                cuda_major=major,
                wheel=str(existing.get("wheel", "")),
                sha256=str(existing.get("sha256", "")),
                origin="already in the cache, checked again (give --force to fetch again)",
                folder=str(final),
                files=tuple(str(f) for f in files) if isinstance(files, list) else (),
                archs=tuple(str(a) for a in existing.get("archs", []) or []),
                checked=(),
                reused=True,
                seconds=time.monotonic() - started,
                notes=tuple(notes),
                pinned=bool(existing.get("pinned", False)),
                trust=str(existing.get("trust", "")),
            )
        notes.append(f"the cached entry at {final} was broken ({problem}); fetched it again")
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=final.parent))
    try:
        if local is None or identity is None:
            hashes = allowed_hashes(package, version, trusted_sha)
            path, origin = _pip_download(package, version, hashes, work, python, timeout)
            identity = check_bytes(path, package, version, trusted_sha)
        else:
            path, origin = local, f"local wheel {local}"
        sha, is_pinned, trust = identity
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
            "pinned": is_pinned,
            "trust": trust,
            "archs": listed,
            "files": files,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cuda_major": major,
            "origin": origin,
        }
        (staging / cache.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        _install(staging, final)
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
            pinned=is_pinned,
            trust=trust,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _recheck(
    kind: str, folder: Path, major: int, targets: Sequence[str], timeout: float
) -> str | None:
    """Why the entry in *folder* no longer passes what fetch checked (its files, then the
    same verification), or ``None`` when it does: "already in the cache" only for an entry
    that works."""
    manifest = cache.read_manifest(folder) or {}
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        return "its manifest lists no files"
    problem = trusted.regular_files(folder, [str(f) for f in files])
    if problem is not None:
        return problem
    try:
        verify(kind, folder, major, targets, timeout)
    except FetchError as exc:
        return str(exc)
    return None
