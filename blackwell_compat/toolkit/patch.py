"""What a patch is: its declaration (:class:`Patch`) and the context it changes things through.

A patch declares its target (distribution, supported range, modules) as class attributes and
makes every change through :class:`PatchContext`, which records how to undo each one, so that
``revert()`` restores the identical objects, newest first.  :mod:`blackwell_compat.registry`
discovers the subclasses through the entry points; the engine decides when they apply.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import inplace
from ..errors import logger

__all__ = ["Patch", "PatchContext", "describe"]


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

        self.on_revert(undo, f"restore {describe(owner)}.{name}")
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
                    f"{describe(owner)}.{name}: rebound, not replaced in place ({exc}); "
                    "references captured before apply() keep the original"
                )
            else:
                self.on_revert(swap.restore, f"restore code of {describe(owner)}.{name}")
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


def describe(owner: Any) -> str:
    if isinstance(owner, types.ModuleType):
        return owner.__name__
    qualname = getattr(owner, "__qualname__", None)
    module = getattr(owner, "__module__", None)
    if qualname and module:
        return f"{module}.{qualname}"
    return type(owner).__name__
