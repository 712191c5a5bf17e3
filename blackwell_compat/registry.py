"""Patch declarations and their discovery through the ``blackwell_compat.patches`` entry points.

A patch is a subclass of :class:`Patch`.  The built-in patches are registered in this
project's own ``pyproject.toml`` exactly as a third-party package registers one::

    [project.entry-points."blackwell_compat.patches"]
    mylib = "mylib_blackwell:MyLibPatch"

A patch module must be cheap to import: import torch and the target library inside
:meth:`Patch.apply`, never at module level.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import inplace
from .errors import logger

ENTRY_POINT_GROUP = "blackwell_compat.patches"
BUILTIN_DISTRIBUTION = "blackwell-compat"


class Patch:
    """Declaration of one patch.  Subclass it and set the class attributes.

    Attributes:
        name: unique name used by ``apply(only=...)``, ``BLACKWELL_COMPAT_DISABLE`` and ``list``.
        summary: one line saying what the patch fixes.
        distribution: the distribution whose versions ``supported`` speaks about (``None``:
            no version gate).
        supported: a ``packaging`` specifier set, compared on the release tuple.
        modules: modules whose import triggers :meth:`apply` (once per module).
        requires_affected: apply only where an affected GPU (or emulation) is present, unless
            ``apply(force=True)``.  ``False`` for patches that fix a problem on every machine.
        strategies: the strategies the patch offers; the first is the default.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    distribution: ClassVar[str | None] = None
    supported: ClassVar[str] = ""
    modules: ClassVar[tuple[str, ...]] = ()
    requires_affected: ClassVar[bool] = True
    strategies: ClassVar[tuple[str, ...]] = ()
    docs: ClassVar[str] = ""

    @property
    def default_strategy(self) -> str | None:
        return self.strategies[0] if self.strategies else None

    def check(self, module: types.ModuleType) -> list[str]:
        """Drift check: describe every way *module* differs from what the patch expects.

        Called before :meth:`apply` for the same module; a non-empty list refuses the patch.
        """
        return []

    def apply(self, module: types.ModuleType, ctx: PatchContext) -> None:
        """Patch *module*.  Make every change through *ctx* so that revert is exact."""
        raise NotImplementedError(f"patch {self.name!r} does not implement apply()")


@dataclass
class _Undo:
    description: str
    action: Callable[[], None]


@dataclass
class PatchContext:
    """What a patch uses to change things; records how to undo each change, in order."""

    patch: str
    strategy: str | None
    _undo: list[_Undo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        """Add a line to the apply report and ``status()`` for this patch."""
        self.notes.append(message)
        logger.info("%s: %s", self.patch, message)

    def on_revert(self, action: Callable[[], None], description: str = "callback") -> None:
        """Run *action* when the patch is reverted (in reverse order of registration)."""
        self._undo.append(_Undo(description, action))

    def set_attr(self, owner: Any, name: str, value: Any) -> Any:
        """Set ``owner.name = value``; revert restores the identical original (or deletes)."""
        missing = object()
        original = inspect.getattr_static(owner, name, missing)
        had_own = name in getattr(owner, "__dict__", {})
        setattr(owner, name, value)

        def undo() -> None:
            if had_own and original is not missing:
                setattr(owner, name, original)
            else:
                delattr(owner, name)

        self.on_revert(undo, f"restore {_describe(owner)}.{name}")
        return None if original is missing else original

    def replace_function(
        self, owner: Any, name: str, replacement: Callable[..., Any]
    ) -> Callable[..., Any]:
        """Make ``owner.name`` behave as *replacement*, everywhere it was captured.

        For a plain Python function the function object itself is changed in place (its code
        now calls *replacement*), so ``from x import f``, ``functools.partial(f, ...)`` and
        bound references made before the patch see it too; the attribute keeps its identity.
        Where in-place replacement is impossible (builtins, closures) the attribute is
        rebound and a note says that references captured earlier keep the original.

        Returns a callable with the original behaviour, for the replacement to delegate to.
        """
        current = getattr(owner, name)
        target = inspect.unwrap(current) if isinstance(current, types.FunctionType) else current
        if isinstance(target, types.FunctionType):
            try:
                swap = inplace.swap_code(target, replacement)
            except inplace.InPlaceUnsupported as exc:
                self.note(
                    f"{_describe(owner)}.{name}: rebound, not replaced in place ({exc}); "
                    "references captured before apply() keep the original"
                )
            else:
                self.on_revert(swap.restore, f"restore code of {_describe(owner)}.{name}")
                return swap.original
        self.set_attr(owner, name, replacement)
        return current  # type: ignore[no-any-return]

    def revert(self) -> list[str]:
        """Undo every recorded change, newest first; returns the errors met (if any)."""
        errors: list[str] = []
        while self._undo:
            item = self._undo.pop()
            try:
                item.action()
            except Exception as exc:  # keep undoing the rest
                errors.append(f"{item.description}: {type(exc).__name__}: {exc}")
        return errors


def _describe(owner: Any) -> str:
    if isinstance(owner, types.ModuleType):
        return owner.__name__
    qualname = getattr(owner, "__qualname__", None)
    module = getattr(owner, "__module__", None)
    if qualname and module:
        return f"{module}.{qualname}"
    return type(owner).__name__


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
    name = getattr(dist, "name", None) if dist is not None else None
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
    # Built-ins first, then third parties by provider name, so the outcome is deterministic.
    eps.sort(key=lambda ep: (_provider(ep) != BUILTIN_DISTRIBUTION, _provider(ep) or "", ep.name))
    result: list[Registration] = []
    taken: dict[str, Registration] = {}
    for ep in eps:
        provider = _provider(ep)
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
