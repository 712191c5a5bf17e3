"""The router: calls on a served device take the rewrite, every other call the original.

"Served" is the targeting layer's verdict (:mod:`blackwell_compat.devices`): a CUDA device whose
architecture the loaded NVRTC lacks (or any CUDA device under ``apply(force=True)``), or the CPU
while emulation is active.  A patch must never change what other devices compute, so every
targeted replacement is a router in front of the original function.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from .. import devices
from .drift import parameter_names
from .roundtrip import call_on_cpu

__all__ = ["Selector", "route", "served", "served_device"]

#: Which argument decides: a parameter name, a position, or a function called with the
#: target's own arguments that returns a tensor, a ``torch.device`` or a container of tensors.
Selector = str | int | Callable[..., Any] | None


def served_device(value: Any) -> Any:
    """The device of the first served tensor in *value* (a tensor, a ``torch.device``, or
    lists/tuples/dicts of them at any depth), or ``None`` when nothing in it is served."""
    torch = sys.modules.get("torch")
    if torch is None or value is None:  # no tensor can exist before torch is imported
        return None
    if isinstance(value, torch.device):
        return value if devices.device_targeted(value) else None
    if isinstance(value, torch.Tensor):
        return value.device if devices.tensor_targeted(value) else None
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            found = served_device(item)
            if found is not None:
                return found
    return None


def served(value: Any) -> bool:
    """Whether *value* (see :func:`served_device`) holds a tensor on a served device."""
    return served_device(value) is not None


class _Route:
    """The decision behind one routed function; bound to the original once that is known
    (an in-place replacement hands the original back only after installation)."""

    def __init__(self, on: Selector, round_trip: bool, always: bool) -> None:
        self.on = on
        self.round_trip = round_trip
        self.always = always
        self.index: int | None = None
        self.keyword: str | None = None
        self.original: Callable[..., Any] | None = None
        self.rewrite: Callable[..., Any] | None = None

    def bind(self, original: Callable[..., Any], rewrite: Callable[..., Any] | None) -> None:
        if rewrite is None and not self.round_trip:
            raise TypeError(f"route({_name(original)}): give a rewrite or round_trip=True")
        if self.always and rewrite is None:
            raise TypeError(f"route({_name(original)}): always=True needs a rewrite")
        if not callable(self.on):
            params = parameter_names(original)
            if params is None:
                raise TypeError(f"route({_name(original)}): the original has no signature")
            if self.on is None or isinstance(self.on, int):
                index = self.on or 0
                if not self.always and not 0 <= index < len(params):
                    raise TypeError(
                        f"route({_name(original)}): no parameter at position {index} in "
                        f"({', '.join(params)})"
                    )
                self.index = index
                self.keyword = params[index] if index < len(params) else None
            else:
                if self.on not in params:
                    raise TypeError(
                        f"route({_name(original)}): on={self.on!r} is not one of its "
                        f"parameters ({', '.join(params)})"
                    )
                self.index, self.keyword = params.index(self.on), self.on
        self.original, self.rewrite = original, rewrite

    def decide(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if callable(self.on):
            try:
                return served_device(self.on(*args, **kwargs))
            except TypeError:  # arguments the target refuses: let it say so itself
                return None
        assert self.index is not None
        if len(args) > self.index:
            return served_device(args[self.index])
        return served_device(kwargs.get(self.keyword or ""))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        original, rewrite = self.original, self.rewrite
        assert original is not None, "routed function called before its original was bound"
        if self.always:
            assert rewrite is not None
            return rewrite(*args, **kwargs)
        device = self.decide(args, kwargs)
        if device is None:
            return original(*args, **kwargs)
        if rewrite is None:
            return call_on_cpu(original, device, args, kwargs)
        return rewrite(*args, **kwargs)


def unbound_route(
    on: Selector = None, *, round_trip: bool = False, always: bool = False
) -> tuple[Callable[..., Any], Callable[[Callable[..., Any], Callable[..., Any] | None], None]]:
    """A routed function not yet bound to its original, and the function that binds it.

    Lets a patch install the routed function first (``ctx.replace_function`` returns the
    original only then) and bind afterwards; :func:`route` does both at once.
    """
    decision = _Route(on, round_trip, always)

    def routed(*args: Any, **kwargs: Any) -> Any:
        return decision(*args, **kwargs)

    def bind(original: Callable[..., Any], rewrite: Callable[..., Any] | None) -> None:
        decision.bind(original, rewrite)
        _describe_routed(routed, original, rewrite, round_trip, always)

    return routed, bind


def route(
    original: Callable[..., Any],
    rewrite: Callable[..., Any] | None = None,
    *,
    on: Selector = None,
    round_trip: bool = False,
    always: bool = False,
) -> Callable[..., Any]:
    """A function with *original*'s parameters: calls whose deciding argument is served go to
    *rewrite* (or, with ``round_trip=True`` and no rewrite, to *original* run on the CPU);
    every other call goes to *original* unchanged.

    Args:
        original: the target's own behaviour.
        rewrite: takes the same arguments as *original*.
        on: the deciding argument: a parameter name, a position (default: the first
            parameter), or a function called with the same arguments that returns a tensor,
            a ``torch.device`` or a container of tensors (any served tensor decides).
        round_trip: served calls without a rewrite run *original* on the CPU
            (:func:`~blackwell_compat.toolkit.call_on_cpu`).
        always: every call takes *rewrite* (a replacement that is not device-specific).

    The result is a plain function (it binds as a method when set on a class);
    ``__wrapped__`` points at *original*, so ``inspect.signature`` and ``getsource`` report
    the target's own.

    Raises:
        TypeError: neither a rewrite nor ``round_trip``, or *on* names no parameter.
    """
    routed, bind = unbound_route(on, round_trip=round_trip, always=always)
    bind(original, rewrite)
    return routed


def _describe_routed(
    routed: Callable[..., Any],
    original: Callable[..., Any],
    rewrite: Callable[..., Any] | None,
    round_trip: bool,
    always: bool,
) -> None:
    if rewrite is None:
        how = "calls on a served device run the original on the CPU"
    else:
        how = f"{'every call takes' if always else 'calls on a served device take'} " + _name(
            rewrite
        )
    base = (getattr(rewrite, "__doc__", None) if always else None) or original.__doc__ or ""
    routed.__doc__ = f"{base.rstrip()}\n\n(replaced by blackwell-compat: {how})".lstrip()
    routed.__name__ = getattr(original, "__name__", routed.__name__)
    routed.__qualname__ = getattr(original, "__qualname__", routed.__qualname__)
    routed.__module__ = getattr(rewrite, "__module__", None) or routed.__module__
    routed.__wrapped__ = original  # type: ignore[attr-defined]


def _name(fn: Any) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}.{qualname}" if module else str(qualname)
