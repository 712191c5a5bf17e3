"""Replace a Python function's behaviour without replacing the function object.

Rebinding ``module.f = g`` misses every reference taken earlier: ``from module import f``,
``functools.partial(f, ...)`` stored on a model (pyannote's WeSpeaker does exactly this with
torchaudio's kaldi ``fbank``), or a default argument.  Swapping the function's ``__code__``
changes what all of them run, and is undone exactly by swapping it back.

The new code is a trampoline ``(*args, **kwargs) -> replacement(*args, **kwargs)``.  It
carries no free variables: the replacement travels in the function's keyword-only defaults,
under a name no caller can pass by accident.  ``__wrapped__`` points at the replacement so that
``inspect.signature`` still reports a real signature.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_IMPL = "__blackwell_compat_impl__"


class InPlaceUnsupported(Exception):
    """The function cannot be changed in place (it is a closure, or not plain Python)."""


def _trampoline(*args: Any, __blackwell_compat_impl__: Any = None, **kwargs: Any) -> Any:
    return __blackwell_compat_impl__(*args, **kwargs)


_MISSING = object()


@dataclass
class CodeSwap:
    """A performed swap.  ``original`` is a fresh function with the original behaviour."""

    function: types.FunctionType
    original: types.FunctionType
    _code: types.CodeType
    _defaults: tuple[Any, ...] | None
    _kwdefaults: dict[str, Any] | None
    _wrapped: Any
    restored: bool = False

    def restore(self) -> None:
        if self.restored:
            return
        fn = self.function
        fn.__code__ = self._code
        fn.__defaults__ = self._defaults
        fn.__kwdefaults__ = self._kwdefaults
        if self._wrapped is _MISSING:
            fn.__dict__.pop("__wrapped__", None)
        else:
            fn.__wrapped__ = self._wrapped  # type: ignore[attr-defined]
        self.restored = True


def copy_function(fn: types.FunctionType) -> types.FunctionType:
    """A new function object with *fn*'s current code, globals, defaults and closure."""
    clone = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    clone.__kwdefaults__ = dict(fn.__kwdefaults__) if fn.__kwdefaults__ else None
    clone.__qualname__ = fn.__qualname__
    clone.__doc__ = fn.__doc__
    clone.__module__ = fn.__module__
    clone.__annotations__ = dict(fn.__annotations__)
    clone.__dict__.update({k: v for k, v in fn.__dict__.items() if k != "__wrapped__"})
    return clone


def is_swapped(fn: Any) -> bool:
    kwdefaults = getattr(fn, "__kwdefaults__", None) or {}
    return _IMPL in kwdefaults


def swap_code(fn: types.FunctionType, replacement: Callable[..., Any]) -> CodeSwap:
    """Make *fn* call *replacement*; returns the :class:`CodeSwap` that undoes it."""
    if not isinstance(fn, types.FunctionType):
        raise InPlaceUnsupported(f"{fn!r} is not a plain Python function")
    if fn.__closure__:
        raise InPlaceUnsupported(f"{fn.__qualname__} is a closure")
    if is_swapped(fn):
        raise InPlaceUnsupported(f"{fn.__qualname__} is already replaced in place")
    original = copy_function(fn)
    swap = CodeSwap(
        function=fn,
        original=original,
        _code=fn.__code__,
        _defaults=fn.__defaults__,
        _kwdefaults=fn.__kwdefaults__,
        _wrapped=fn.__dict__.get("__wrapped__", _MISSING),
    )
    fn.__code__ = _trampoline.__code__.replace(co_name=fn.__code__.co_name)
    fn.__defaults__ = None
    fn.__kwdefaults__ = {_IMPL: replacement}
    fn.__wrapped__ = replacement  # type: ignore[attr-defined]
    return swap
