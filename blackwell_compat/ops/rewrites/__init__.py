"""Jiterator-free implementations of the inventory ops, used by the op guard.

:func:`run` is called by the dispatcher kernel (:mod:`blackwell_compat.ops.kernel`) for a call
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
from typing import Any

from ... import state
from .. import overlap
from ..spec import OverloadSpec
from . import complex_ops, real_ops, reductions

Rewrite = Callable[[OverloadSpec, dict[str, Any]], Any]

#: entry name -> rewrite.  Entries not listed here use the CPU round trip.
REWRITES: dict[str, Rewrite] = {
    **complex_ops.REWRITES,
    **reductions.REWRITES,
    **real_ops.REWRITES,
}


#: Routes a guarded call takes: an exact Jiterator-free rewrite, or PyTorch's own CPU kernel.
ROUTE_REWRITE = "rewrite"
ROUTE_ROUND_TRIP = "cpu round trip"


def route_for(entry: str) -> str:
    """:data:`ROUTE_REWRITE` or :data:`ROUTE_ROUND_TRIP` (documentation, ``status()``)."""
    return ROUTE_REWRITE if entry in REWRITES else ROUTE_ROUND_TRIP


def run(
    spec: OverloadSpec,
    keyset: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    device: Any,
    call_original: Callable[[Any, tuple[Any, ...], dict[str, Any]], Any],
) -> Any:
    """Compute the call without the Jiterator and return what the overload returns.

    An ``out=`` or in-place call whose output overlaps an input as PyTorch refuses is refused
    first, with PyTorch's message (:mod:`..overlap`): the rewrite computes into a new tensor
    and the round trip into copies, so neither would notice.
    """
    rewrite = REWRITES.get(spec.entry.name)
    bound = spec.bind(args, kwargs) if spec.mutable or rewrite is not None else {}
    if spec.mutable:
        overlap.check(spec, bound)
    if rewrite is not None:
        result = rewrite(spec, bound)
        if result is not NotImplemented:
            return deliver(spec, bound, _with_native_layout(spec, bound, result))
    return round_trip(spec, keyset, args, kwargs, device, call_original)


# Ops whose CPU and CUDA kernels compute a complex input's real result into a temporary and copy
# it out: such results are contiguous whatever the input's layout (into a complex out=, the
# kernel writes directly and keeps the layout; functional form: angle only).
_CONTIGUOUS_OUT = frozenset(("abs", "angle"))
_CONTIGUOUS_RESULT = frozenset(("angle",))
# Ops whose kernels refuse an out= of another dtype than the input's.
_SAME_DTYPE_OUT = frozenset(("sgn", "neg", "conj_physical"))


def _layout_probe(spec: OverloadSpec, bound: dict[str, Any], shape: Any) -> Any:
    """Strides PyTorch's elementwise kernels give a result of *shape* for these operands.

    TensorIterator orders the output's dimensions like its inputs' strides; an elementwise op
    of the same operands on one-byte tensors with those strides shows that order, without
    touching the data.
    """
    import torch

    names = set(spec.mutable)
    inputs = [
        v for k, v in bound.items() if k not in names and isinstance(v, torch.Tensor) and v.dim()
    ]
    if not inputs or all(t.is_contiguous() for t in inputs):
        return None
    probes = [torch.empty_strided(t.shape, t.stride(), dtype=torch.uint8) for t in inputs]
    with state.bypass():
        layout = probes[0].clone() if len(probes) == 1 else torch.add(probes[0], probes[1])
        for extra in probes[2:]:
            layout = torch.add(layout, extra)
    if tuple(layout.shape) != tuple(shape):
        return None
    return layout.stride()


def _with_native_layout(spec: OverloadSpec, bound: dict[str, Any], result: Any) -> Any:
    """*result* with the strides PyTorch's own kernel would have given it."""
    import torch

    if spec.mutable or not isinstance(result, torch.Tensor) or result.dim() == 0:
        return result
    if spec.entry.name in _CONTIGUOUS_RESULT:
        return result.contiguous()
    strides = _layout_probe(spec, bound, result.shape)
    if strides is None:
        return result.contiguous()
    if result.stride() == strides:
        return result
    laid_out = torch.empty_strided(result.shape, strides, dtype=result.dtype)
    laid_out.copy_(result)
    return laid_out


def resize_output(target: Any, shape: Any, strides: Any = None) -> None:
    """Resize an ``out=`` tensor as PyTorch's kernels do: warn when it had elements."""
    import warnings

    if tuple(target.shape) == tuple(shape):
        return
    if target.numel() != 0:
        warnings.warn(
            f"An output with one or more elements was resized since it had shape "
            f"{list(target.shape)}, which does not match the required output shape "
            f"{list(shape)}. This behavior is deprecated, and in a future PyTorch release "
            "outputs will not be resized unless they have zero elements. You can explicitly "
            "reuse an out tensor t by resizing it, inplace, to zero elements with t.resize_(0).",
            UserWarning,
            stacklevel=3,
        )
    target.resize_(shape)
    if strides is not None and target.stride() != tuple(strides):
        target.as_strided_(shape, strides)


def deliver(spec: OverloadSpec, bound: dict[str, Any], result: Any) -> Any:
    """Write a functional *result* where the overload puts it (``out=``, in-place ``self``)."""
    if not spec.mutable:
        return result
    target = bound[spec.mutable[0]]
    _check_castable(result.dtype, target.dtype)
    name = spec.entry.name
    complex_target = target.dtype.is_complex
    same_dtype = name in _SAME_DTYPE_OUT or (name == "abs" and complex_target)
    if same_dtype and target.dtype != bound["self"].dtype:
        # These kernels write only into an out= of the input's own dtype (abs: when complex).
        raise RuntimeError(
            f"Found dtype {_scalar_type_name(target.dtype)} but expected "
            f"{_scalar_type_name(bound['self'].dtype)}"
        )
    if tuple(target.shape) != tuple(result.shape):
        read_too = any(value is target for key, value in bound.items() if key not in spec.mutable)
        if spec.mutable[0] == "self" or read_too:
            # An output that is also an input (in-place, or out= the input itself) is never
            # resized: it must already have the broadcast shape.
            raise RuntimeError(
                f"output with shape {list(target.shape)} doesn't match the broadcast shape "
                f"{list(result.shape)}"
            )
        strides = None
        if complex_target or name not in _CONTIGUOUS_OUT:
            strides = _layout_probe(spec, bound, result.shape)
        resize_output(target, result.shape, strides)
    written, result = overlap.distinct_targets(target, result)
    written.copy_(result)
    return target


# torch dtype name -> the ScalarType name PyTorch's own messages use
_SCALAR_TYPE_NAMES = {
    "bool": "Bool",
    "uint8": "Byte",
    "int8": "Char",
    "int16": "Short",
    "int32": "Int",
    "int64": "Long",
    "float16": "Half",
    "bfloat16": "BFloat16",
    "float32": "Float",
    "float64": "Double",
    "complex32": "ComplexHalf",
    "complex64": "ComplexFloat",
    "complex128": "ComplexDouble",
}


def _scalar_type_name(dtype: Any) -> str:
    name = str(dtype).replace("torch.", "")
    return _SCALAR_TYPE_NAMES.get(name, name)


def _check_castable(result: Any, target: Any) -> None:
    """Refuse an ``out=``/in-place target the result cannot be cast to, as PyTorch does."""
    import torch

    if result != target and not torch.can_cast(result, target):
        raise RuntimeError(
            f"result type {_scalar_type_name(result)} can't be cast to the desired output "
            f"type {_scalar_type_name(target)}"
        )


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

    if device.type == "cpu":
        return call_original(keyset, args, kwargs)
    cpu_args = tuple(_to_cpu(a) for a in args)
    cpu_kwargs = {k: _to_cpu(v) for k, v in kwargs.items()}
    if spec.factory:
        cpu_kwargs["device"] = torch.device("cpu")
    with state.bypass():
        result = spec.op(*cpu_args, **cpu_kwargs)
    if spec.factory:
        return result.to(device)
    if spec.mutable:
        bound = spec.bind(args, kwargs)
        cpu_bound = spec.bind(cpu_args, cpu_kwargs)
        for name in spec.mutable:
            target, computed = bound[name], cpu_bound[name]
            if tuple(target.shape) != tuple(computed.shape):
                # The CPU kernel already warned about the resize; keep the strides it chose.
                target.resize_(computed.shape)
                if target.stride() != computed.stride():
                    target.as_strided_(computed.shape, computed.stride())
            target.copy_(computed)
        if spec.returns_alias:
            return bound[spec.mutable[0]]
    if isinstance(result, torch.Tensor):
        return result.to(device)
    return result
