"""Small drift-check helpers shared by the targeted patches.

A targeted patch rewrites a known function of a third-party library.  Before it does, it checks
that the function still looks like what the rewrite was written for: the parameters it takes
and the names its body refers to (``co_names`` of the code object and of every code object
nested in it: global names and attribute names).  Names are stable across Python versions where
raw bytecode is not, so these checks do not break on an interpreter upgrade.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable
from typing import Any


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

    *params* is the exact leading list of parameters the rewrite relies on (``None``: not
    checked); further parameters after them are reported too, because a rewrite that ignores
    a new argument would silently compute something else.
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
