"""Declarative patches: say *what* to rewrite and what it relies on; the toolkit does the rest.

A :class:`DeclaredPatch` lists :class:`Rewrite` and :class:`Expect` declarations.  For each
module of the patch, :meth:`DeclaredPatch.check` runs the drift expectations declared for that
module (a rewrite's own included) and :meth:`DeclaredPatch.apply` installs that module's
rewrites behind the router (:func:`~blackwell_compat.toolkit.route`), so a patch never branches
on ``module.__name__``: the declaration names its module.

Installation follows the owner: a function of a module is replaced in place (its code now calls
the router, so references captured earlier see it too, see :mod:`blackwell_compat.inplace`); a
method is replaced on its class (instances built earlier see it too).  Revert restores both
exactly.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ConfigError
from .drift import AS_REWRITE, Expect
from .patch import Patch, PatchContext
from .router import Selector, unbound_route

__all__ = ["AS_REWRITE", "DeclaredPatch", "Rewrite"]

#: Builds the rewrite from the target module and the original behaviour (which it may call).
Builder = Callable[[types.ModuleType, Callable[..., Any]], Callable[..., Any]]


@dataclass(frozen=True, init=False)
class Rewrite:
    """One function or method to replace, and what the replacement relies on.

    Args:
        target: the function or method, with its drift expectation:
            ``Expect(module, "function" or "Class.method", params=..., names=...,
            signature=..., constants=...)``; the module's import installs the rewrite (and
            triggers the patch).  ``params`` / ``signature`` may be :data:`AS_REWRITE`: those
            of the rewrite.
        rewrite: what served calls run; takes the target's own arguments.
        build: instead of *rewrite*: ``build(module, original) -> rewrite``, for a rewrite
            that needs the module or delegates to the original.
        on: the deciding argument (see :func:`~blackwell_compat.toolkit.route`); default the
            first parameter.
        round_trip: strategies in which served calls run the original on the CPU instead.
        always: replace unconditionally (a change that is not device-specific).
        strategies: the strategies that install it (``None``: all of the patch's).
        note: a line for the apply report once installed.
        skipped_note: a line for the apply report when the strategy does not install it.
    """

    target: Expect
    rewrite: Callable[..., Any] | None = None
    build: Builder | None = None
    on: Selector = None
    round_trip: Sequence[str] = ()
    always: bool = False
    strategies: Sequence[str] | None = None
    note: str = ""
    skipped_note: str = ""

    def __init__(
        self,
        target: Expect,
        *positional: Any,
        rewrite: Callable[..., Any] | None = None,
        build: Builder | None = None,
        on: Selector = None,
        round_trip: Sequence[str] = (),
        always: bool = False,
        strategies: Sequence[str] | None = None,
        note: str = "",
        skipped_note: str = "",
    ) -> None:
        if positional:
            raise TypeError(
                "Rewrite takes its target as an Expect, then keywords only: "
                "Rewrite(Expect('module', 'function', names=(...)), rewrite=...); got "
                f"{len(positional) + 1} positional arguments"
            )
        for name, value in (
            ("target", target),
            ("rewrite", rewrite),
            ("build", build),
            ("on", on),
            ("round_trip", round_trip),
            ("always", always),
            ("strategies", strategies),
            ("note", note),
            ("skipped_note", skipped_note),
        ):
            object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.target, Expect):
            raise TypeError(
                "Rewrite takes its target as an Expect: Rewrite(Expect('module', 'function', "
                f"names=(...)), rewrite=...); got {type(self.target).__name__} {self.target!r}"
            )
        what = f"Rewrite({self.module!r}, {self.attribute!r})"
        if not self.attribute:
            raise TypeError(f"{what}: the target names no attribute ('function' or 'Class.method')")
        if not self.target.about_a_callable:
            raise TypeError(
                f"{what}: the target is a function or a method; is_class, instance_of and "
                "value belong in an Expect of their own"
            )
        if self.rewrite is not None and self.build is not None:
            raise TypeError(f"{what}: give rewrite or build, not both")
        if self.rewrite is None and self.build is None and not self.round_trip:
            raise TypeError(f"{what}: give rewrite, build or round_trip (the strategies)")
        for fn, label in ((self.rewrite, "rewrite"), (self.build, "build")):
            if fn is not None and not callable(fn):
                raise TypeError(f"{what}: {label} must be callable, got {type(fn).__name__}")
        for names, label in ((self.round_trip, "round_trip"), (self.strategies, "strategies")):
            if isinstance(names, str):
                raise TypeError(f"{what}: {label} is a sequence of strategy names, not a string")
        if self.always and (self.round_trip or self.on is not None):
            raise TypeError(f"{what}: always=True routes nothing (no on, no round_trip)")
        uncovered = set(self.strategies or ()) - set(self.round_trip)
        if self.rewrite is None and self.build is None and uncovered:
            raise TypeError(
                f"{what}: no rewrite for the strategies {sorted(uncovered)} "
                "(give rewrite/build, or list them in round_trip)"
            )

    @property
    def module(self) -> str:
        """The module whose import installs it (the target's)."""
        return self.target.module

    @property
    def attribute(self) -> str:
        """``"function"`` or ``"Class.method"`` (the target's)."""
        return self.target.attribute

    def expectation(self, model: Callable[..., Any] | None) -> Expect:
        """The drift expectation on the target, with *model* standing for the rewrite."""
        return self.target.resolved(model)

    def problems(self, module: types.ModuleType) -> list[str]:
        """Drift of the target (and of the rewrite's parameters against it)."""
        model = None
        if self.target.relies_on_rewrite:
            model = self.rewrite
            if model is None and self.build is not None:
                owner, attr = _owner(module, self.attribute)
                target = getattr(owner, attr, None) if owner is not None else None
                model = self.build(module, target) if target is not None else None
        return self.expectation(model).problems(module)

    def installs(self, strategy: str | None) -> bool:
        return self.strategies is None or strategy in self.strategies

    def install(self, module: types.ModuleType, ctx: PatchContext, strategy: str | None) -> None:
        """Replace the target in *module* through *ctx* (revert restores it) as *strategy*
        asks."""
        if not self.installs(strategy):
            if self.skipped_note:
                ctx.note(self.skipped_note)
            return
        owner, attr = _owner(module, self.attribute)
        if owner is None:  # the drift check reports it; apply is never reached then
            raise AttributeError(f"{module.__name__}.{self.attribute} is missing")
        round_trip = strategy in self.round_trip
        routed, bind = unbound_route(self.on, round_trip=round_trip, always=self.always)
        if isinstance(owner, types.ModuleType):
            original = ctx.replace_function(owner, attr, routed)
        else:
            original = getattr(owner, attr)
            ctx.set_attr(owner, attr, routed)
        rewrite = None
        if not round_trip:
            rewrite = self.rewrite if self.build is None else self.build(module, original)
        bind(original, rewrite)
        if self.note:
            ctx.note(self.note)


def _owner(module: types.ModuleType, attribute: str) -> tuple[Any, str]:
    """``(module or class, name)`` for ``"name"`` or ``"Class.name"`` (``None``: no class)."""
    if "." not in attribute:
        return module, attribute
    class_name, attr = attribute.split(".")
    cls = getattr(module, class_name, None)
    return (cls if isinstance(cls, type) else None), attr


class DeclaredPatch(Patch):
    """A patch made of declarations: :attr:`declarations` lists :class:`Rewrite` and
    :class:`Expect` objects; :meth:`check` and :meth:`apply` work from them per module.

    ``modules`` defaults to the declared modules, in order of first appearance.  Every
    declaration is validated when the class is created: a mistake is a ``TypeError`` naming
    the class and the declaration, not a silent no-op at run time.
    """

    declarations: ClassVar[tuple[Rewrite | Expect, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        decls = cls.declarations
        if not isinstance(decls, tuple):
            raise TypeError(f"{cls.__name__}.declarations must be a tuple of Rewrite/Expect")
        for decl in decls:
            if not isinstance(decl, (Rewrite, Expect)):
                raise TypeError(
                    f"{cls.__name__}.declarations: {decl!r} is neither a Rewrite nor an Expect"
                )
            if isinstance(decl, Expect) and decl.relies_on_rewrite:
                raise TypeError(
                    f"{cls.__name__}.declarations: Expect({decl.module!r}, {decl.attribute!r}) "
                    "compares with AS_REWRITE, which only the target of a Rewrite may"
                )
        declared = list(dict.fromkeys(d.module for d in decls))
        if not cls.modules:
            cls.modules = tuple(declared)
        for module in declared:
            if module not in cls.modules:
                raise TypeError(
                    f"{cls.__name__}: a declaration targets {module!r}, which is not in "
                    f"modules {cls.modules}"
                )
        for module in cls.modules:
            if module not in declared:
                raise TypeError(f"{cls.__name__}: nothing is declared for module {module!r}")
        known = set(cls.strategies)
        for decl in decls:
            if isinstance(decl, Rewrite):
                unknown = set(decl.strategies or ()) | set(decl.round_trip)
                if unknown - known:
                    raise TypeError(
                        f"{cls.__name__}: Rewrite({decl.module!r}, {decl.attribute!r}) names "
                        f"strategies {sorted(unknown - known)} the patch does not offer "
                        f"(strategies = {cls.strategies})"
                    )

    def declared_for(self, module: types.ModuleType) -> list[Rewrite | Expect]:
        """The declarations about *module*, in order."""
        return [d for d in self.declarations if d.module == module.__name__]

    def check(self, module: types.ModuleType) -> list[str]:
        """Every declared expectation about *module*, in order of declaration, each problem once."""
        declared = self.declared_for(module)
        if not declared:
            return [f"the {self.name} patch declares nothing for {module.__name__}"]
        problems: list[str] = []
        for decl in declared:
            # Two strategies may declare the same target: say each problem once.
            problems += [p for p in decl.problems(module) if p not in problems]
        return problems

    def apply(self, module: types.ModuleType, ctx: PatchContext) -> None:
        """Install the rewrites declared for *module* that the strategy asks for."""
        strategy = ctx.strategy or self.default_strategy
        if self.strategies and strategy not in self.strategies:
            raise ConfigError(
                f"{self.name} patch: unknown {self.name} strategy {strategy!r}; use one of "
                f"{', '.join(self.strategies)}"
            )
        for decl in self.declared_for(module):
            if isinstance(decl, Rewrite):
                decl.install(module, ctx, strategy)
