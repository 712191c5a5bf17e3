"""Installed distribution versions, read from package metadata without importing anything.

Version gates compare the *release tuple*: NVIDIA container builds report versions such as
``2.6.0a0+ecf3bae40a``, a pre-release that ``SpecifierSet(">=2.6")`` would reject although the
code is 2.6.0.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet


def installed_version(distribution: str) -> str | None:
    """The installed version string of *distribution*, or ``None`` when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
    except Exception:  # a broken dist-info folder must not crash a probe
        return None


def release_string(version: str) -> str | None:
    """``"2.6.0a0+ecf3bae40a"`` -> ``"2.6.0"``; ``None`` for an unparsable version."""
    from packaging.version import InvalidVersion, Version

    try:
        parsed = Version(version)
    except InvalidVersion:
        return None
    return ".".join(str(part) for part in parsed.release)


def release_tuple(version: str | None) -> tuple[int, ...] | None:
    """``"2.6.0a0+ecf3bae40a"`` -> ``(2, 6, 0)``; ``None`` for a missing or unparsable one."""
    if not version:
        return None
    text = release_string(version)
    return None if text is None else tuple(int(part) for part in text.split("."))


@lru_cache(maxsize=256)
def _specifier(spec: str) -> SpecifierSet:
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(spec)


def in_range(version: str, spec: str) -> bool:
    """Whether the release tuple of *version* satisfies the specifier set *spec*.

    An empty *spec* accepts every version.  Raises ``ValueError`` for a malformed *spec*
    (a bug in a patch declaration, reported by the registry).
    """
    if not spec.strip():
        return True
    release = release_string(version)
    if release is None:
        return False
    return _specifier(spec).contains(release, prereleases=True)
