"""The project's compiler cache: where ``fetch`` puts a capable NVRTC or ptxas.

Layout, under :func:`compilers_root` (``<cache>/compilers``, the cache folder of
:func:`blackwell_compat.probing.isolation.cache_dir`)::

    nvrtc/cu<major>/<version>/   libnvrtc.so.<major>, libnvrtc-builtins.so.<major.minor>, ...
    ptxas/<version>/bin/ptxas

Each folder holds a ``manifest.json`` (what was fetched, from which wheel, its SHA-256, the
architectures verified after unpacking, the files).  A folder without a readable manifest is
not an entry: ``fetch`` unpacks into a temporary folder next to it and renames it into place
only once the manifest is written, so a crash half-way leaves nothing that looks complete.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..probing.isolation import cache_dir

MANIFEST = "manifest.json"
KINDS = ("nvrtc", "ptxas")
_VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+)*", re.ASCII)


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


def compilers_root() -> Path:
    """``<cache>/compilers`` (nothing is created)."""
    return cache_dir() / "compilers"


def kind_root(kind: str, cuda_major: int | None = None) -> Path:
    """The folder holding the versions of one kind (``nvrtc`` needs the CUDA major)."""
    if kind not in KINDS:
        raise ValueError(f"compiler kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "nvrtc":
        if not isinstance(cuda_major, int) or isinstance(cuda_major, bool) or cuda_major < 11:
            raise ValueError(f"nvrtc needs a CUDA major version >= 11, got {cuda_major!r}")
        return compilers_root() / "nvrtc" / f"cu{cuda_major}"
    return compilers_root() / "ptxas"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when it is missing or unreadable (then the folder is not
    a cache entry)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def entries(kind: str, cuda_major: int | None = None) -> list[CacheEntry]:
    """The complete entries of one kind, newest version first."""
    root = kind_root(kind, cuda_major)
    try:
        children = list(root.iterdir())
    except OSError:
        return []
    found = []
    for child in children:
        if not child.is_dir() or not _VERSION_RE.fullmatch(child.name):
            continue
        manifest = read_manifest(child)
        if manifest is None or manifest.get("kind") != kind:
            continue
        found.append(CacheEntry(kind, child, child.name, manifest))
    found.sort(key=lambda entry: _version_key(entry.version), reverse=True)
    return found


def nvrtc_dirs(cuda_major: int) -> list[Path]:
    """Cached NVRTC folders for one CUDA major, newest first."""
    return [entry.folder for entry in entries("nvrtc", cuda_major)]


def ptxas_dirs() -> list[Path]:
    """Cached ptxas folders (each with ``bin/ptxas``), newest first."""
    return [entry.folder for entry in entries("ptxas")]


def entry_folder(kind: str, version: str, cuda_major: int | None = None) -> Path:
    """Where the entry of *version* lives (nothing is created)."""
    if not _VERSION_RE.fullmatch(version):
        raise ValueError(f"version {version!r} is not dotted numbers such as '12.9.86'")
    return kind_root(kind, cuda_major) / version
