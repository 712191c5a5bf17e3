"""How the dtype that selects a CUDA kernel is worked out from a call's arguments.

One function per :data:`blackwell_compat.ops.inventory.DTYPE_RULE_TEXTS` key.  Each takes the
overload spec and the call's ``args``/``kwargs`` as the dispatcher passes them (positional
arguments up to the last one given, keyword-only ones in ``kwargs``) and returns a
``torch.dtype`` or ``None`` when the call launches no jitted kernel whatever the dtype.  They run
on every intercepted call, so they stay small.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .spec import OverloadSpec

Rule = Callable[[OverloadSpec, tuple[Any, ...], dict[str, Any]], Any]


def _tensor_type() -> Any:
    import torch

    return torch.Tensor


def _floatish(dtype: Any) -> Any:
    """Integer and bool inputs of float ops compute in the default float dtype."""
    import torch

    if dtype.is_floating_point or dtype.is_complex:
        return dtype
    return torch.get_default_dtype()


def _arg(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> Any:
    try:
        index = spec.arg_names.index(name)
    except ValueError:
        return kwargs.get(name, spec.defaults.get(name))
    if index < len(args):
        return args[index]
    return kwargs.get(name, spec.defaults.get(name))


def _first_tensor(args: tuple[Any, ...]) -> Any:
    import torch

    for arg in args:
        if isinstance(arg, torch.Tensor):
            return arg
    return None


def unary(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    tensor = _first_tensor(args)
    return None if tensor is None else tensor.dtype


def unary_float(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    tensor = _first_tensor(args)
    return None if tensor is None else _floatish(tensor.dtype)


def _operands(args: tuple[Any, ...]) -> list[Any]:
    import torch

    return [a for a in args[:2] if isinstance(a, (torch.Tensor, bool, int, float, complex))]


def binary(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import torch

    operands = _operands(args)
    if len(operands) < 2:
        return unary(spec, args, kwargs)
    try:
        return torch.result_type(operands[0], operands[1])
    except (TypeError, RuntimeError):
        return None


def binary_float(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    dtype = binary(spec, args, kwargs)
    return None if dtype is None else _floatish(dtype)


def _combine(higher: Any, lower: Any) -> Any:
    """The result dtype when *lower* comes from lower-priority operands (0-dim tensors below
    dimensioned ones): only a higher category of *lower* counts, as in PyTorch."""
    import torch

    if higher.is_complex:
        return higher
    if lower.is_complex:
        if higher.is_floating_point:
            return {
                torch.float16: torch.complex32,
                torch.float32: torch.complex64,
                torch.float64: torch.complex128,
            }.get(higher, torch.promote_types(higher, lower))
        return lower
    if higher.is_floating_point:
        return higher
    if higher == torch.bool or lower.is_floating_point:
        return torch.promote_types(higher, lower)
    return higher


def tensor_result_dtype(tensors: list[Any]) -> Any:
    """The dtype PyTorch's elementwise kernels give *tensors* (dimensioned ones before 0-dim
    ones), for any number of operands (``torch.result_type`` takes two)."""
    import torch

    dimensioned = [t.dtype for t in tensors if t.dim() > 0]
    zero_dim = [t.dtype for t in tensors if t.dim() == 0]
    if not dimensioned or not zero_dim:
        return functools.reduce(torch.promote_types, dimensioned or zero_dim)
    return _combine(
        functools.reduce(torch.promote_types, dimensioned),
        functools.reduce(torch.promote_types, zero_dim),
    )


def promote(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import torch

    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors:
        return None
    return tensor_result_dtype(tensors)


def div(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if kwargs.get("rounding_mode") is not None:
        return None
    return binary(spec, args, kwargs)


def _real_exponent(value: Any) -> float | None:
    """A real exponent as a float, or ``None`` (complex numbers keep the generic kernel)."""
    import torch

    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.device.type == "cpu":
        if value.is_complex():
            return None
        return float(value.item())
    return None


def pow(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """complex32 always; complex64/128 only for a real exponent of +-0.5 (sqrt/rsqrt).

    For ``Tensor_Tensor`` the exponent counts as a number when it is a 0-dim CPU tensor: on
    CUDA that is PyTorch's "CPU scalar", read on the host (under emulation every 0-dim exponent
    tensor is taken to be one).  ``Tensor_Scalar`` with exponent 0 or 1, and ``Scalar`` with
    base 1, fill or copy without launching a kernel.
    """
    import torch

    self = _arg(spec, args, kwargs, "self")
    exponent = _arg(spec, args, kwargs, "exponent")
    dtype = binary(spec, (self, exponent), {})
    if dtype is None or not dtype.is_complex:
        return None
    if not isinstance(exponent, torch.Tensor) and (exponent == 0 or exponent == 1):
        return None
    if not isinstance(self, torch.Tensor):  # a number raised to a tensor
        return dtype if dtype == torch.complex32 and self != 1 else None
    if dtype == torch.complex32:
        return dtype
    if isinstance(exponent, torch.Tensor):
        if exponent.dim() != 0 or exponent.device.type != "cpu":
            return None
    value = _real_exponent(exponent)
    if value is not None and value in (0.5, -0.5):
        return dtype
    return None


def reduce(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import torch

    dtype = kwargs.get("dtype")
    if dtype is not None:
        return dtype
    for name in spec.mutable:
        out = kwargs.get(name)
        if isinstance(out, torch.Tensor):
            return out.dtype
    tensor = _first_tensor(args)
    if tensor is None:
        return None
    if spec.entry.name in ("sum", "prod") and not (
        tensor.dtype.is_floating_point or tensor.dtype.is_complex
    ):
        return torch.int64
    return tensor.dtype


def polygamma(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return unary_float(spec, args, kwargs)


def factory(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import torch

    if not args or not isinstance(args[0], int) or args[0] < 2:
        return None
    dtype = kwargs.get("dtype")
    return torch.get_default_dtype() if dtype is None else dtype


#: Inventory rule name (:data:`.inventory.DTYPE_RULE_TEXTS`) -> the function deciding the dtype.
DTYPE_RULES: dict[str, Rule] = {
    "unary": unary,
    "unary_float": unary_float,
    "binary": binary,
    "binary_float": binary_float,
    "promote": promote,
    "div": div,
    "pow": pow,
    "reduce": reduce,
    "polygamma": polygamma,
    "factory": factory,
}
