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
from .drift import Expect, parameter_names
from .patch import Patch, PatchContext
from .router import Selector, unbound_route

__all__ = ["AS_REWRITE", "DeclaredPatch", "Rewrite"]

#: For ``Rewrite(params=...)`` / ``Rewrite(signature=...)``: compare with the rewrite's own
#: parameters (for ``build``, with the function it builds).
AS_REWRITE: Any = "<the rewrite's own parameters>"

#: Builds the rewrite from the target module and the original behaviour (which it may call).
Builder = Callable[[types.ModuleType, Callable[..., Any]], Callable[..., Any]]


@dataclass(frozen=True)
class Rewrite:
    """One function or method to replace, and what the replacement relies on.

    Args:
        module: the module whose import installs it (also the patch's trigger).
        attribute: ``"function"`` (of the module) or ``"Class.method"``.
        rewrite: what served calls run; takes the target's own arguments.
        build: instead of *rewrite*: ``build(module, original) -> rewrite``, for a rewrite
            that needs the module or delegates to the original.
        on: the deciding argument (see :func:`~blackwell_compat.toolkit.route`); default the
            first parameter.
        round_trip: strategies in which served calls run the original on the CPU instead.
        always: replace unconditionally (a change that is not device-specific).
        strategies: the strategies that install it (``None``: all of the patch's).
        params: the target's exact parameter names (drift, as in :class:`Expect`), or
            :data:`AS_REWRITE`: those of the rewrite.
        names: names the target's body must still use (drift).
        signature: a model whose parameters and defaults the target must have (drift), or
            :data:`AS_REWRITE`.
        constants: literal constants the target's body must still contain (drift).
        note: a line for the apply report once installed.
        skipped_note: a line for the apply report when the strategy does not install it.
    """

    module: str
    attribute: str
    rewrite: Callable[..., Any] | None = None
    build: Builder | None = None
    on: Selector = None
    round_trip: Sequence[str] = ()
    always: bool = False
    strategies: Sequence[str] | None = None
    params: Sequence[str] | None = None
    names: Sequence[str] = ()
    signature: Callable[..., Any] | None = None
    constants: Sequence[Any] = ()
    note: str = ""
    skipped_note: str = ""

    def __post_init__(self) -> None:
        what = f"Rewrite({self.module!r}, {self.attribute!r})"
        if not isinstance(self.module, str) or not self.module:
            raise TypeError(f"{what}: module must be a non-empty module name")
        if not isinstance(self.attribute, str) or not self.attribute:
            raise TypeError(f"{what}: attribute must be 'function' or 'Class.method'")
        if self.attribute.count(".") > 1:
            raise TypeError(f"{what}: attribute is 'function' or 'Class.method', nothing deeper")
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
        self.expectation(None)  # validates the drift fields

    def expectation(self, model: Callable[..., Any] | None) -> Expect:
        """The drift expectation on the target, with *model* standing for the rewrite."""
        params = self.params
        if params is AS_REWRITE:
            params = None if model is None else parameter_names(model)
        signature = self.signature
        if signature is AS_REWRITE:
            signature = model
        return Expect(
            self.module,
            self.attribute,
            params=params,
            names=self.names,
            signature=signature,
            constants=self.constants,
        )

    def problems(self, module: types.ModuleType) -> list[str]:
        """Drift of the target (and of the rewrite's parameters against it)."""
        model = None
        if AS_REWRITE in (self.params, self.signature):
            model = self.rewrite
            if model is None and self.build is not None:
                owner, attr = _owner(module, self.attribute)
                target = getattr(owner, attr, None) if owner is not None else None
                model = self.build(module, target) if target is not None else None
            if model is None:
                return self.expectation(None).problems(module)
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
