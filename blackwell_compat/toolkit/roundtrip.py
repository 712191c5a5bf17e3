"""The CPU round trip: run a library's own function on the CPU for tensors on a served device.

A ``cpu`` strategy trades the transfers for bit-exact reference kernels: the arguments are moved
to the CPU, the original function runs there outside emulation, and the result comes back to
the device the call was made on.  Tensors are found at any depth of lists, tuples (named tuples
keep their type), dicts and their subclasses; tensors on other devices are left where they are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .. import emulation

__all__ = ["call_on_cpu", "map_tensors", "move_tensors", "outside_emulation"]


@contextmanager
def outside_emulation() -> Iterator[None]:
    """Run the block as plain CPU work, even while ``bc.emulate()`` is active.

    Under emulation the "device" already is the CPU, and the reference computation must not hit
    the emulated failure: it is what a real machine's CPU would run.  Only the calling thread is
    affected.
    """
    with emulation.suspended():
        yield


def map_tensors(value: Any, convert: Callable[[Any], Any]) -> Any:
    """*value* with every tensor replaced by ``convert(tensor)``, at any depth.

    Lists, tuples, named tuples and dicts (subclasses included) are rebuilt with their own
    type; every other object is returned as it is (the same object).
    """
    import torch

    if isinstance(value, torch.Tensor):
        return convert(value)
    if isinstance(value, list):
        return type(value)(map_tensors(v, convert) for v in value)
    if isinstance(value, tuple):
        mapped = [map_tensors(v, convert) for v in value]
        return type(value)(*mapped) if hasattr(value, "_fields") else type(value)(mapped)
    if isinstance(value, dict):
        items = [(k, map_tensors(v, convert)) for k, v in value.items()]
        try:
            return type(value)(items)
        except TypeError:  # a dict subclass with another constructor (defaultdict...)
            rebuilt = value.copy()
            rebuilt.update(items)
            return rebuilt
    return value


def move_tensors(value: Any, source: Any, target: Any) -> Any:
    """*value* with every tensor on device *source* moved to *target*, at any depth
    (:func:`map_tensors`); tensors on other devices stay where they are.  Autograd flows
    through the copies (``Tensor.to`` is differentiable)."""
    return map_tensors(value, lambda t: t.to(target) if t.device == source else t)


def call_on_cpu(
    fn: Callable[..., Any], device: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    """``fn(*args, **kwargs)`` with every tensor on *device* moved to the CPU first, computed
    outside emulation, and every tensor in the result moved back to *device*.

    For a CPU *device* (emulation) nothing moves: the call simply runs the reference kernels,
    and its backward pass runs outside emulation too.
    """
    import torch

    cpu = torch.device("cpu")
    if device.type != "cpu":
        moved_args = move_tensors(tuple(args), device, cpu)
        moved_kwargs = move_tensors(dict(kwargs), device, cpu)
        with outside_emulation():
            result = fn(*moved_args, **moved_kwargs)
        return move_tensors(result, cpu, device)
    if torch.is_grad_enabled() and _grad_inputs(args, kwargs):
        return _with_reference_backward(fn, args, kwargs)
    with outside_emulation():
        return fn(*args, **kwargs)


def _grad_inputs(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[tuple[int | str, Any]]:
    """Top-level tensor arguments that require grad, with their position or keyword."""
    import torch

    keyed: list[tuple[int | str, Any]] = [*enumerate(args), *kwargs.items()]
    return [(k, v) for k, v in keyed if isinstance(v, torch.Tensor) and v.requires_grad]


@functools.cache
def _reference_function() -> Any:
    """The ``autograd.Function`` that differentiates a reference call outside emulation
    (built once, on first use: defining it needs torch)."""
    import torch

    class ReferenceOnCpu(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, call: Callable[[list[Any]], Any], *inputs: Any) -> Any:
            with torch.enable_grad():
                leaves = [x.detach().requires_grad_() for x in inputs]
                with outside_emulation():
                    out = call(leaves)
            if not isinstance(out, torch.Tensor):
                raise TypeError("the cpu strategy differentiates single-tensor results only")
            ctx.leaves = leaves
            ctx.out = out
            return out.detach()

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            with outside_emulation():
                grads = torch.autograd.grad(ctx.out, ctx.leaves, grad, allow_unused=True)
            return (None, *grads)

    return ReferenceOnCpu


def _with_reference_backward(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    """Run *fn* outside emulation, backward pass included.

    With a real GPU the round trip's backward runs on the CPU, which is never affected.  Under
    emulation the CPU plays the affected GPU, so autograd would replay the complex kernels'
    backward (``sgn``...) inside the emulated failure; the call is wrapped in an
    ``autograd.Function`` whose backward differentiates the reference graph outside emulation.
    """
    inputs = _grad_inputs(args, kwargs)

    def call(leaves: list[Any]) -> Any:
        new_args = list(args)
        new_kwargs = dict(kwargs)
        for (key, _), leaf in zip(inputs, leaves, strict=True):
            if isinstance(key, int):
                new_args[key] = leaf
            else:
                new_kwargs[key] = leaf
        return fn(*new_args, **new_kwargs)

    return _reference_function().apply(call, *(value for _, value in inputs))
