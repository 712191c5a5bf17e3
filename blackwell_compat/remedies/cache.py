"""The project's compiler cache: where ``fetch`` puts a capable NVRTC or ptxas.

Layout, under :func:`compilers_root` (``<cache>/compilers``, the cache folder the library may
use, :func:`blackwell_compat.trusted.cache_folders`)::

    nvrtc/cu<major>/<version>/   libnvrtc.so.<major>, libnvrtc-builtins.so.<major.minor>, ...
    ptxas/<version>/bin/ptxas

Each folder holds a ``manifest.json`` (what was fetched, from which wheel, its SHA-256 and
whether the project pins it, the architectures verified after unpacking, the files).  A folder
without a readable manifest is not an entry: ``fetch`` unpacks into a temporary folder next to
it and renames it into place only once the manifest is written, so a crash half-way leaves
nothing that looks complete.  Only folders this user owns and nobody else can write to are
read (a cache folder that is refused is replaced by a private one, and said so), the manifest
is read without following links and with a size limit, and an entry whose files are not
regular files of their own is no entry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..trusted import FileRefused, cache_folders, read_file, regular_files

__all__ = [
    "KINDS",
    "MANIFEST",
    "CacheEntry",
    "compilers_root",
    "compilers_roots",
    "entries",
    "entry_folder",
    "kind_root",
    "nvrtc_dirs",
    "ptxas_dirs",
    "read_manifest",
]

MANIFEST = "manifest.json"
KINDS = ("nvrtc", "ptxas")
_VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+)*", re.ASCII)
_MANIFEST_LIMIT = 1 << 20  # a manifest is a few hundred bytes


@dataclass(frozen=True)
class CacheEntry:
    """One complete folder of the compiler cache."""

    kind: str
    folder: Path
    version: str
    manifest: dict[str, Any]

    @property
    def files(self) -> list[str]:
        files = self.manifest.get("files", [])
        return [str(f) for f in files] if isinstance(files, list) else []

    @property
    def archs(self) -> list[str]:
        archs = self.manifest.get("archs", [])
        return [str(a) for a in archs] if isinstance(archs, list) else []


def compilers_roots() -> list[Path]:
    """``<cache>/compilers`` of every cache folder the library may use, the preferred one
    first (nothing is created)."""
    return [folder / "compilers" for folder in cache_folders().usable]


def compilers_root() -> Path:
    """``<cache>/compilers`` of the preferred cache folder: where ``fetch`` writes (nothing is
    created).  ``OSError`` when no cache folder may be used at all."""
    roots = compilers_roots()
    if not roots:
        refused = "; ".join(cache_folders().refused) or "no cache folder"
        raise PermissionError(f"no cache folder may be used: {refused}")
    return roots[0]


def _kind_path(kind: str, cuda_major: int | None) -> Path:
    if kind not in KINDS:
        raise ValueError(f"compiler kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "nvrtc":
        if not isinstance(cuda_major, int) or isinstance(cuda_major, bool) or cuda_major < 11:
            raise ValueError(f"nvrtc needs a CUDA major version >= 11, got {cuda_major!r}")
        return Path("nvrtc") / f"cu{cuda_major}"
    return Path("ptxas")


def kind_root(kind: str, cuda_major: int | None = None) -> Path:
    """The folder holding the versions of one kind in the preferred cache (``nvrtc`` needs the
    CUDA major)."""
    sub = _kind_path(kind, cuda_major)
    return compilers_root() / sub


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when it is missing, unreadable, a link, not a regular
    file or too big (then the folder is not a cache entry)."""
    try:
        data = json.loads(read_file(folder / MANIFEST, _MANIFEST_LIMIT).decode("utf-8"))
    except (FileRefused, OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def entries(kind: str, cuda_major: int | None = None) -> list[CacheEntry]:
    """The complete entries of one kind, newest version first (the preferred cache's first
    where two folders hold the same version)."""
    sub = _kind_path(kind, cuda_major)
    found: list[CacheEntry] = []
    versions: set[str] = set()
    for base in compilers_roots():
        try:
            children = list((base / sub).iterdir())
        except OSError:
            continue
        for child in children:
            if child.is_symlink() or not child.is_dir() or not _VERSION_RE.fullmatch(child.name):
                continue
            if child.name in versions:
                continue
            manifest = read_manifest(child)
            if manifest is None or manifest.get("kind") != kind:
                continue
            entry = CacheEntry(kind, child, child.name, manifest)
            if regular_files(child, entry.files) is not None:
                continue  # a link or a folder where a compiler file should be: no entry
            versions.add(child.name)
            found.append(entry)
    found.sort(key=lambda entry: _version_key(entry.version), reverse=True)
    return found


def nvrtc_dirs(cuda_major: int) -> list[Path]:
    """Cached NVRTC folders for one CUDA major, newest first."""
    return [entry.folder for entry in entries("nvrtc", cuda_major)]


def ptxas_dirs() -> list[Path]:
    """Cached ptxas folders (each with ``bin/ptxas``), newest first."""
    return [entry.folder for entry in entries("ptxas")]


def entry_folder(kind: str, version: str, cuda_major: int | None = None) -> Path:
    """Where the entry of *version* lives in the preferred cache (nothing is created)."""
    if not _VERSION_RE.fullmatch(version):
        raise ValueError(f"version {version!r} is not dotted numbers such as '12.9.86'")
    return kind_root(kind, cuda_major) / version
