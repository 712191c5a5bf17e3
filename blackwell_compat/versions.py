"""Installed distribution versions, read from package metadata without importing anything.

Version gates compare the *release tuple*: NVIDIA container builds report versions such as
``2.6.0a0+ecf3bae40a``, a pre-release that ``SpecifierSet(">=2.6")`` would reject although the
code is 2.6.0.
"""

from __future__ import annotations

#: The version of blackwell-compat itself: the one source (``pyproject.toml`` reads it statically,
#: the package root re-exports it, and modules that report it import it from here, never from the
#: root, so no module below the root depends on the root's import-time work).
__version__ = "0.1.0"

from functools import lru_cache

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing is not loaded at interpreter start-up
    from typing import Any

    from packaging.specifiers import SpecifierSet


def installed_version(distribution: str) -> str | None:
    """The installed version string of *distribution*, or ``None`` when it is not installed."""
    from importlib import metadata

    try:
        return metadata_field(metadata.distribution(distribution), "Version")
    except metadata.PackageNotFoundError:
        return None
    except Exception:  # a broken dist-info folder must not crash a probe
        return None


def metadata_field(dist: Any, field: str) -> str | None:
    """One header field (``Name``, ``Version``) of an installed distribution's metadata.

    ``importlib.metadata`` parses the whole file with the ``email`` package, long description
    included, for each field asked (about 1 ms a distribution); the headers come first and end
    at the first blank line, so reading up to there answers the same.  Falls back to the
    distribution's own property (``dist.name``, ``dist.version``) for metadata that is not
    such a file.
    """
    read = getattr(dist, "read_text", None)
    text = None
    if callable(read):
        text = read("METADATA")
        text = read("PKG-INFO") if text is None else text
    if isinstance(text, str):
        prefix = f"{field.lower()}:"
        for line in text.splitlines():
            if not line.strip():
                break
            if line[: len(prefix)].lower() == prefix:
                return line[len(prefix) :].strip()
    value = getattr(dist, field.lower(), None)
    return None if value is None else str(value)


def release(version: str | None) -> tuple[int, ...] | None:
    """``"2.6.0a0+ecf3bae40a"`` -> ``(2, 6, 0)``; ``None`` for a missing or unparsable version.

    The one parser of release tuples: compare these, never the raw strings (a pre-release or a
    local build tag of the same code would compare lower).
    """
    if not version:
        return None
    from packaging.version import InvalidVersion, Version  # packaging: only when asked

    try:
        return tuple(Version(version).release)
    except InvalidVersion:
        return None


def release_string(version: str) -> str | None:
    """``"2.6.0a0+ecf3bae40a"`` -> ``"2.6.0"``; ``None`` for an unparsable version."""
    parts = release(version)
    return None if parts is None else ".".join(str(part) for part in parts)


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
