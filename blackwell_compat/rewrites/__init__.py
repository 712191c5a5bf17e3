"""Jiterator-free implementations of the inventory ops, used by the op guard.

:func:`run` is called by the dispatcher kernel (:mod:`blackwell_compat.dispatch`) for a call
that would reach a Jiterator kernel on a targeted device.  It uses an exact real-arithmetic
rewrite where one exists (:mod:`.complex_ops`, :mod:`.reductions`, :mod:`.real_ops`) and a
CPU round trip otherwise:

* for a CUDA tensor, the arguments are copied to the CPU, the op runs there with PyTorch's own
  CPU kernel, and the result (and any ``out=``/in-place argument) is copied back;
* for a CPU tensor under emulation, the captured original CPU kernel runs directly: that is
  what the round trip would compute, without the emulated failure.

A rewrite is written for the functional form of the op and receives the call's arguments by
schema name; :func:`run` writes the result into ``out=`` or the in-place ``self`` as the
overload demands.  A rewrite may return ``NotImplemented`` to fall back to the round trip for
a particular call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import complex_ops, real_ops, reductions

if TYPE_CHECKING:  # pragma: no cover
    from ..dispatch import OverloadSpec

Rewrite = Callable[["OverloadSpec", dict[str, Any]], Any]

#: entry name -> rewrite.  Entries not listed here use the CPU round trip.
REWRITES: dict[str, Rewrite] = {
    **complex_ops.REWRITES,
    **reductions.REWRITES,
    **real_ops.REWRITES,
}


def strategy_for(entry: str) -> str:
    """``"rewrite"`` or ``"cpu round trip"`` (documentation, ``status()``)."""
    return "rewrite" if entry in REWRITES else "cpu round trip"


def run(
    spec: OverloadSpec,
    keyset: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    device: Any,
    call_original: Callable[[Any, tuple[Any, ...], dict[str, Any]], Any],
) -> Any:
    """Compute the call without the Jiterator and return what the overload returns."""
    rewrite = REWRITES.get(spec.entry.name)
    if rewrite is not None:
        bound = spec.bind(args, kwargs)
        result = rewrite(spec, bound)
        if result is not NotImplemented:
            return deliver(spec, bound, result)
    return round_trip(spec, keyset, args, kwargs, device, call_original)


def deliver(spec: OverloadSpec, bound: dict[str, Any], result: Any) -> Any:
    """Write a functional *result* where the overload puts it (``out=``, in-place ``self``)."""
    if not spec.mutable:
        return result
    target = bound[spec.mutable[0]]
    if tuple(target.shape) != tuple(result.shape):
        if spec.mutable[0] == "self":
            raise RuntimeError(
                f"output with shape {list(target.shape)} doesn't match the broadcast shape "
                f"{list(result.shape)}"
            )
        target.resize_(result.shape)
    target.copy_(result)
    return target


def _to_cpu(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor) and value.device.type != "cpu":
        return value.to("cpu")
    return value


def round_trip(
    spec: OverloadSpec,
    keyset: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    device: Any,
    call_original: Callable[[Any, tuple[Any, ...], dict[str, Any]], Any],
) -> Any:
    """Compute on the CPU with PyTorch's own kernel and bring the result back."""
    import torch

    from ..dispatch import bypass

    if device.type == "cpu":
        return call_original(keyset, args, kwargs)
    cpu_args = tuple(_to_cpu(a) for a in args)
    cpu_kwargs = {k: _to_cpu(v) for k, v in kwargs.items()}
    if spec.factory:
        cpu_kwargs["device"] = torch.device("cpu")
    with bypass():
        result = spec.op(*cpu_args, **cpu_kwargs)
    if spec.factory:
        return result.to(device)
    if spec.mutable:
        bound = spec.bind(args, kwargs)
        cpu_bound = spec.bind(cpu_args, cpu_kwargs)
        for name in spec.mutable:
            target, computed = bound[name], cpu_bound[name]
            if tuple(target.shape) != tuple(computed.shape):
                target.resize_(computed.shape)
            target.copy_(computed)
        if spec.returns_alias:
            return bound[spec.mutable[0]]
    if isinstance(result, torch.Tensor):
        return result.to(device)
    return result
