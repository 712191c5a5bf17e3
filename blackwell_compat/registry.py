"""Discovery of patches through the ``blackwell_compat.patches`` entry points.

A patch is a subclass of :class:`~blackwell_compat.toolkit.Patch` (re-exported here).  The
built-in patches are registered in this project's own ``pyproject.toml`` exactly as a
third-party package registers one::

    [project.entry-points."blackwell_compat.patches"]
    mylib = "mylib_blackwell:MyLibPatch"

A patch module must be cheap to import: import torch and the target library inside
:meth:`Patch.apply`, never at module level.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .toolkit.patch import Patch, PatchContext
from .versions import metadata_field

__all__ = [
    "BUILTIN_DISTRIBUTION",
    "ENTRY_POINT_GROUP",
    "Patch",
    "PatchContext",
    "Registration",
    "discover",
    "load_patch",
]

ENTRY_POINT_GROUP = "blackwell_compat.patches"
BUILTIN_DISTRIBUTION = "blackwell-compat"


@dataclass(frozen=True)
class Registration:
    """One entry point of the group: the loaded patch, or why it could not be loaded."""

    name: str
    value: str
    provider: str | None
    patch: Patch | None = None
    error: str | None = None

    @property
    def builtin(self) -> bool:
        return self.provider == BUILTIN_DISTRIBUTION


def _entry_points() -> Sequence[Any]:
    from importlib import metadata

    return tuple(metadata.entry_points(group=ENTRY_POINT_GROUP))


def _provider(entry_point: Any) -> str | None:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return None
    try:
        name = metadata_field(dist, "Name")
    except Exception:  # a broken dist-info folder: the distribution is unknown
        name = None
    if name is None:
        return None
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def load_patch(obj: Any, name: str) -> Patch:
    """Turn what an entry point loaded into a :class:`Patch` instance, or raise TypeError."""
    if isinstance(obj, type) and issubclass(obj, Patch):
        obj = obj()
    if not isinstance(obj, Patch):
        raise TypeError(
            f"entry point {name!r} loaded {obj!r}, which is neither a Patch subclass nor "
            "a Patch instance"
        )
    if not obj.name:
        raise TypeError(f"entry point {name!r}: the patch class declares no name")
    if obj.name != name:
        raise TypeError(
            f"entry point {name!r} loads a patch named {obj.name!r}; the two must be equal"
        )
    if obj.strategies and len(set(obj.strategies)) != len(obj.strategies):
        raise TypeError(f"patch {name!r} lists a strategy twice: {obj.strategies}")
    if obj.supported:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            SpecifierSet(obj.supported)
        except InvalidSpecifier as exc:
            raise TypeError(f"patch {name!r}: invalid supported range {obj.supported!r}") from exc
    return obj


def discover(entry_points: Iterable[Any] | None = None) -> list[Registration]:
    """Load every entry point of the group.  Never raises: failures become registrations
    with an ``error``; a second patch with a name already taken gets an error naming both
    providers (a built-in patch keeps its name)."""
    eps = list(_entry_points() if entry_points is None else entry_points)
    providers = [_provider(ep) for ep in eps]  # each reads the distribution's metadata once
    # Built-ins first, then third parties by provider name, so the outcome is deterministic.
    order = sorted(
        range(len(eps)),
        key=lambda i: (providers[i] != BUILTIN_DISTRIBUTION, providers[i] or "", eps[i].name),
    )
    result: list[Registration] = []
    taken: dict[str, Registration] = {}
    for ep, provider in ((eps[i], providers[i]) for i in order):
        value = getattr(ep, "value", "?")
        if ep.name in taken:
            first = taken[ep.name]
            result.append(
                Registration(
                    ep.name,
                    value,
                    provider,
                    error=(
                        f"duplicate patch name {ep.name!r}: {value} (from {provider or 'unknown'})"
                        f" conflicts with {first.value} (from {first.provider or 'unknown'}),"
                        " which keeps the name"
                    ),
                )
            )
            continue
        try:
            patch = load_patch(ep.load(), ep.name)
        except Exception as exc:
            reg = Registration(
                ep.name, value, provider, error=f"failed to load: {type(exc).__name__}: {exc}"
            )
        else:
            reg = Registration(ep.name, value, provider, patch=patch)
        taken[ep.name] = reg
        result.append(reg)
    return result
