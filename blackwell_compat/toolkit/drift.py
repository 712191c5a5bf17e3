"""Drift checks: does the installed target still look like what a rewrite was written for?

A rewrite re-implements a known function of a third-party library.  Before it is installed, the
target is compared with what the rewrite relies on: the parameters it takes (names, order, and
where the rewrite re-states them, kinds and defaults), the names its body refers to
(``co_names`` of the code object and of every code object nested in it), the literal constants
it contains, module constants and the version of a second distribution.  Names, parameters and
constants are stable across Python versions where raw bytecode is not, so these checks do not
break on an interpreter upgrade; a hash of the bytecode would.

Every check returns a list of human-readable problems; an empty list means "as expected".
:class:`Expect` bundles them declaratively; the functions below are its building blocks and
are public for checks a declaration cannot say.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..versions import in_range, installed_version

__all__ = [
    "AS_REWRITE",
    "Expect",
    "class_problems",
    "constants_problems",
    "defaults_problems",
    "function_problems",
    "parameter_names",
    "referenced_names",
    "version_problems",
]


def referenced_names(fn: Any) -> set[str]:
    """Global and attribute names used by *fn*'s body (nested functions included)."""
    fn = inspect.unwrap(fn) if callable(fn) else fn
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return set()
    names: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return names


def parameter_names(fn: Any) -> list[str] | None:
    """The parameter names of *fn* in order, or ``None`` when it has no readable signature."""
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def function_problems(
    owner: Any,
    attr: str,
    *,
    where: str,
    params: Iterable[str] | None = None,
    names: Iterable[str] = (),
) -> list[str]:
    """Describe how ``owner.attr`` differs from a function taking *params* and using *names*.

    *params* is the exact list of parameters the rewrite relies on (``None``: not checked);
    further parameters after them are reported too, because a rewrite that ignores a new
    argument would silently compute something else.
    """
    fn = inspect.getattr_static(owner, attr, None)
    if isinstance(fn, (staticmethod, classmethod)):
        fn = fn.__func__
    if fn is None:
        return [f"{where}.{attr} is missing"]
    if not callable(fn):
        return [f"{where}.{attr} is not a function ({type(fn).__name__})"]
    problems: list[str] = []
    if params is not None:
        expected = list(params)
        actual = parameter_names(fn)
        if actual is None:
            problems.append(f"{where}.{attr} has no readable signature")
        elif actual != expected:
            problems.append(
                f"{where}.{attr} takes ({', '.join(actual)}), expected ({', '.join(expected)})"
            )
    wanted = list(names)
    if wanted:
        used = referenced_names(fn)
        missing = [name for name in wanted if name not in used]
        if missing:
            problems.append(f"{where}.{attr} no longer uses {', '.join(missing)}")
    return problems


def class_problems(module: types.ModuleType, name: str) -> tuple[type | None, list[str]]:
    """``module.name`` if it is a class, else ``None`` and the problem."""
    cls = getattr(module, name, None)
    if cls is None:
        return None, [f"{module.__name__}.{name} is missing"]
    if not isinstance(cls, type):
        return None, [f"{module.__name__}.{name} is not a class ({type(cls).__name__})"]
    return cls, []


def defaults_problems(target: Any, model: Callable[..., Any], where: str) -> list[str]:
    """Compare the parameters of *target* with those of *model* (usually the rewrite itself):
    names, order, kinds and default values.  Annotations are ignored (they vary between
    releases without changing behaviour)."""
    try:
        actual = inspect.signature(target).parameters
        expected = inspect.signature(model).parameters
    except (TypeError, ValueError):
        return [f"{where} has no readable signature"]
    actual_names = list(actual)
    expected_names = list(expected)
    if actual_names != expected_names:
        return [
            f"{where} takes ({', '.join(actual_names)}), expected ({', '.join(expected_names)})"
        ]
    problems: list[str] = []
    for name, param in expected.items():
        found = actual[name]
        if found.kind != param.kind:
            problems.append(f"{where}: parameter {name} is now {found.kind.description}")
        if not _same_default(found.default, param.default):
            problems.append(
                f"{where}: default of {name} is {_shown(found.default)}, expected "
                f"{_shown(param.default)}"
            )
    return problems


def _shown(default: Any) -> str:
    return "none" if default is inspect.Parameter.empty else repr(default)


def _same_default(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:
        return False


def constants_problems(fn: Any, wanted: Iterable[Any], where: str) -> list[str]:
    """Report literal constants (``400``, ``1e-10``...) that *fn*'s body no longer contains.

    Constants live in the code object's ``co_consts`` on every Python version, so this check
    survives bytecode changes.  A constant matches only a constant of the same type."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if not isinstance(code, types.CodeType):
        return [f"{where} is not a Python function"]
    found: list[Any] = []
    stack = [code]
    while stack:
        current = stack.pop()
        for const in current.co_consts:
            if isinstance(const, types.CodeType):
                stack.append(const)
            else:
                found.append(const)
    missing = [c for c in wanted if not any(type(f) is type(c) and f == c for f in found)]
    if missing:
        return [f"{where} no longer uses the constant(s) {', '.join(map(repr, missing))}"]
    return []


def version_problems(distribution: str, supported: str) -> list[str]:
    """The installed *distribution* must be in the specifier set *supported* (release tuple)."""
    version = installed_version(distribution)
    if version is None or not in_range(version, supported):
        return [
            f"{distribution} {version or '(version unknown)'} is outside the supported "
            f"range {supported!r}"
        ]
    return []


_ABSENT: Any = object()


class _AsRewrite:
    """The type of :data:`AS_REWRITE` (one instance; its repr names it)."""

    def __repr__(self) -> str:
        return "AS_REWRITE"


#: For ``Expect(params=...)`` / ``Expect(signature=...)`` as the target of a
#: :class:`~blackwell_compat.toolkit.Rewrite`: compare with the rewrite's own parameters (for
#: ``build``, with the function it builds).  Only a rewrite's target may say it.
AS_REWRITE: Any = _AsRewrite()


@dataclass(frozen=True)
class Expect:
    """What a patch relies on in ``module.attribute``: its drift expectation, declared.

    Args:
        module: the module (as imported) the expectation is about.
        attribute: the attribute inside *module*: ``"fn"``, ``"Class"`` or
            ``"Class.method"`` (one level of class).  Empty: the module itself (for
            *distribution* / *check*).
        params: the exact parameter names of the function, in order (``None``: not checked;
            :data:`AS_REWRITE` in a rewrite's target: those of the rewrite).
        names: global and attribute names its body must still use.
        signature: a model function (usually the rewrite): parameter names, kinds and
            defaults must equal its own (:data:`AS_REWRITE` in a rewrite's target: the
            rewrite itself).
        constants: literal constants its body must still contain.
        value: the attribute must equal this value (a module constant such as ``N_FFT``).
        instance_of: the attribute must be an instance of this type.
        is_class: the attribute must be a class.
        distribution: a second distribution whose installed version must be in *supported*
            (the patch's own ``distribution`` is gated by the engine).
        supported: the specifier set for *distribution*.
        check: a function ``(module) -> problems`` for what a declaration cannot say.
    """

    module: str
    attribute: str = ""
    params: Sequence[str] | None = None
    names: Sequence[str] = ()
    signature: Callable[..., Any] | None = None
    constants: Sequence[Any] = ()
    value: Any = _ABSENT
    instance_of: type | tuple[type, ...] | None = None
    is_class: bool = False
    distribution: str | None = None
    supported: str = ""
    check: Callable[[types.ModuleType], list[str]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.module, str) or not self.module:
            raise TypeError(f"Expect: module must be a non-empty module name, got {self.module!r}")
        if self.attribute.count(".") > 1:
            raise TypeError(
                f"Expect({self.module!r}, {self.attribute!r}): attribute is 'name' or "
                "'Class.name', nothing deeper"
            )
        if bool(self.distribution) != bool(self.supported):
            raise TypeError(
                f"Expect({self.module!r}): distribution and supported go together "
                f"(got distribution={self.distribution!r}, supported={self.supported!r})"
            )
        if isinstance(self.params, str) or isinstance(self.names, str):
            raise TypeError(
                f"Expect({self.module!r}, {self.attribute!r}): params and names are sequences "
                "of names, not one string"
            )

    @property
    def about_a_callable(self) -> bool:
        """Whether it expects a function or a method (no ``is_class``, ``instance_of`` or
        ``value``): what a rewrite's target must be."""
        return not self.is_class and self.instance_of is None and self.value is _ABSENT

    @property
    def relies_on_rewrite(self) -> bool:
        """Whether *params* or *signature* is :data:`AS_REWRITE` (only a rewrite's target)."""
        return self.params is AS_REWRITE or self.signature is AS_REWRITE

    def resolved(self, model: Callable[..., Any] | None) -> Expect:
        """This expectation with :data:`AS_REWRITE` replaced by what *model* (the rewrite)
        says; with no model, those checks are left out."""
        if not self.relies_on_rewrite:
            return self
        params = self.params
        if params is AS_REWRITE:
            params = None if model is None else parameter_names(model)
        signature = model if self.signature is AS_REWRITE else self.signature
        return replace(self, params=params, signature=signature)

    def problems(self, module: types.ModuleType) -> list[str]:
        """Every way *module* differs from this expectation (empty: as expected)."""
        if self.relies_on_rewrite:
            raise TypeError(
                f"Expect({self.module!r}, {self.attribute!r}) compares with AS_REWRITE: only "
                "the target of a Rewrite may, which resolves it"
            )
        where = module.__name__
        problems: list[str] = []
        if self.distribution:
            problems += version_problems(self.distribution, self.supported)
        if self.attribute:
            problems += self._attribute_problems(module, where)
        if self.check is not None:
            problems += self.check(module)
        return problems

    def _attribute_problems(self, module: types.ModuleType, where: str) -> list[str]:
        owner: Any = module
        attr = self.attribute
        if "." in attr:
            class_name, attr = attr.split(".")
            cls, problems = class_problems(module, class_name)
            if cls is None:
                return problems
            owner, where = cls, f"{where}.{class_name}"
        if self.is_class:
            return class_problems(module, attr)[1]
        if self.value is not _ABSENT or self.instance_of is not None:
            return self._value_problems(owner, attr, where)
        problems = function_problems(owner, attr, where=where, params=self.params, names=self.names)
        target = inspect.getattr_static(owner, attr, None)
        if target is None or problems[:1] == [f"{where}.{attr} is missing"]:
            return problems
        if self.signature is not None:
            problems += defaults_problems(target, self.signature, f"{where}.{attr}")
        if self.constants:
            problems += constants_problems(target, self.constants, f"{where}.{attr}")
        return problems

    def _value_problems(self, owner: Any, attr: str, where: str) -> list[str]:
        found = getattr(owner, attr, _ABSENT)
        if self.instance_of is not None and not isinstance(found, self.instance_of):
            if found is _ABSENT:
                return [f"{where}.{attr} is missing"]
            return [f"{where}.{attr} is {type(found).__name__}, expected {_type_names(self)}"]
        if self.value is not _ABSENT and found != self.value:
            shown = None if found is _ABSENT else found
            return [f"{where}.{attr} is {shown!r}, expected {self.value!r}"]
        return []


def _type_names(expect: Expect) -> str:
    found = expect.instance_of
    kinds: tuple[Any, ...] = found if isinstance(found, tuple) else (found,)
    return " or ".join(k.__name__ for k in kinds if isinstance(k, type))
