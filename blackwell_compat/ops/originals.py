"""The original kernels the dispatcher kernel falls back to, captured per dispatch key.

At ``CPU``/``CUDA`` (registration ``backend``, torch >= 2.9) the original is the kernel
``torch.library.get_kernel`` returns, called boxed; at ``BackendSelect`` (older torch) it is a
re-dispatch to the keys after ``BackendSelect``.  Neither takes Python numbers where the schema
says ``Tensor`` (PyTorch's "wrapped numbers", the ``2.5`` of ``x * 2.5``), so those calls go
through :func:`_call_with_numbers`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from .. import state
from .rewrites import resize_output
from .spec import OverloadSpec

Original = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]


@functools.lru_cache(maxsize=1)
def _tensor_type() -> Any:
    import torch  # torch is imported lazily throughout the package (import cost)

    return torch.Tensor


def _category(dtype: Any) -> int:
    if dtype.is_complex:
        return 3
    if dtype.is_floating_point:
        return 2
    return 0 if str(dtype) == "torch.bool" else 1


_NUMBER_TYPES = frozenset((bool, int, float, complex))

# (type, exact value key, reference dtype, wanted dtype) -> 0-dim tensor.  The value key keeps
# the sign of zero (0.0 == -0.0 would share an entry) and NaNs are never cached, so an entry is
# only ever reused for a bit-identical number.
_NUMBER_CACHE: dict[tuple[Any, ...], Any] = {}
_NUMBER_CACHE_SIZE = 256


def _value_key(value: Any) -> Any:
    """A cache key equal only for bit-identical numbers of the same type, or ``None``."""
    kind = value.__class__
    if kind is float:
        if value != value:
            return None
        return (kind, value, math.copysign(1.0, value))
    if kind is complex:
        re, im = value.real, value.imag
        if re != re or im != im:
            return None
        return (kind, re, im, math.copysign(1.0, re), math.copysign(1.0, im))
    return (kind, value)


def _number_dtype(value: Any, tensors: list[Any]) -> Any:
    """The dtype of the 0-dim tensor that stands for a wrapped number *value*.

    It must promote like PyTorch's wrapped number against *tensors* once every tensor operand
    has at least one dimension (see :func:`_call_with_numbers`), and keep the number's value
    where the kernel reads it at higher precision than the result (``x_f16 * 0.1`` computes
    with the double ``0.1`` rounded to float, not to half).
    """
    import torch

    kind = value.__class__
    if kind is bool:
        wide = torch.bool
    elif kind is int:
        wide = torch.int64
    elif kind is float:
        wide = torch.float64
    else:
        wide = torch.complex128
    if not tensors or _category(wide) <= max(_category(t.dtype) for t in tensors):
        return wide
    # A number of a higher category than every tensor: the result takes that category's
    # default dtype (or, for a complex number with a float tensor, that tensor's complex type).
    dtype = torch.result_type(tensors[0], value)
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, torch.result_type(tensor, value))
    if dtype == torch.complex32:
        # complex32 results compute in complex64 with the number rounded to complex64
        # (what the kernel reads); a complex64 0-dim tensor still yields complex32 against a
        # half tensor: a lower-priority complex operand takes the float operand's precision.
        return torch.complex64
    return dtype


def _as_tensor(value: Any, tensors: list[Any]) -> Any:
    """A number in a ``Tensor`` slot as a 0-dim tensor (see :func:`_number_dtype`).

    Cached by exact value and the operands' dtypes (kernels only read these operands), so a
    loop multiplying by the same constant neither allocates nor works out promotion per call.
    """
    import torch

    value_key = _value_key(value)
    if value_key is not None:
        # The default dtype decides what an int tensor times a float number gives.
        key = (*value_key, torch.get_default_dtype(), *[t.dtype for t in tensors])
        cached = _NUMBER_CACHE.get(key)
        if cached is not None:
            return cached
    tensor = torch.tensor(value, dtype=_number_dtype(value, tensors))
    if value_key is not None and len(_NUMBER_CACHE) < _NUMBER_CACHE_SIZE:
        _NUMBER_CACHE[key] = tensor
    return tensor


def _number_slots(spec: OverloadSpec, args: tuple[Any, ...]) -> list[int]:
    """Positions of ``Tensor`` parameters that hold a Python number (a wrapped number)."""
    count = len(args)
    return [i for i in spec.tensor_slots if i < count and args[i].__class__ in _NUMBER_TYPES]


def _call_with_numbers(
    call: Callable[[Any, tuple[Any, ...], dict[str, Any]], Any],
    spec: OverloadSpec,
    keyset: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    slots: list[int],
) -> Any:
    """Call a kernel that cannot take Python numbers where PyTorch passed wrapped numbers.

    A Python kernel receives PyTorch's "wrapped number" (the ``2.5`` of ``x * 2.5``) as a plain
    number, and a captured kernel only takes tensors.  A wrapped number promotes below every
    tensor, 0-dim tensors included; a plain 0-dim tensor does not.  So the number becomes a
    0-dim tensor (:func:`_as_tensor`), and when every tensor operand is 0-dim as well, those
    operands are given one dimension for the call (views of one element) and the result is
    viewed back as 0-dim: against 1-element tensors a 0-dim number promotes exactly as the
    wrapped number did, and the kernel reads its value at the same precision.
    """
    tensor_type = _tensor_type()
    count = len(args)
    tensors = [args[i] for i in spec.tensor_slots if i < count and isinstance(args[i], tensor_type)]
    fixed = list(args)
    for i in slots:
        fixed[i] = _as_tensor(args[i], tensors)
    for tensor in tensors:
        if tensor.dim() != 0:
            return call(keyset, tuple(fixed), kwargs)
    if not tensors:
        return call(keyset, tuple(fixed), kwargs)

    import torch

    for i in spec.tensor_slots:
        if i < len(args) and isinstance(args[i], tensor_type):
            fixed[i] = args[i].view(1)
    out_name = next((n for n in spec.mutable if n in kwargs), None)
    out = kwargs.get(out_name) if out_name is not None else None
    if out_name is not None and isinstance(out, tensor_type):
        if out.dim() != 0:
            common = torch.result_type(tensors[0], args[slots[0]])
            if not torch.can_cast(common, out.dtype):
                # Let the kernel raise its own "can't be cast" error, out untouched.
                return call(keyset, tuple(fixed), kwargs)
            # What the kernel does to an out= tensor of another shape, warning included.
            resize_output(out, ())
        kwargs = {**kwargs, out_name: out.view(1)}
    result = call(keyset, tuple(fixed), kwargs)
    if spec.returns_alias:
        return out if out is not None else args[0]
    if isinstance(result, tensor_type):
        return result.view(())
    return result


def original_for(spec: OverloadSpec, key: str) -> Original | None:
    """The original kernel of *spec* at dispatch *key*, callable as ``(keyset, args, kwargs)``."""
    import torch

    if key == "BackendSelect":
        after = torch._C._dispatch_keyset_full_after(torch._C.DispatchKey.BackendSelect)
        op = spec.op
        if spec.factory:
            return _factory_original(op)
        redispatch_op = op.redispatch

        def plain_redispatch(keyset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return redispatch_op(keyset & after, *args, **kwargs)

        def redispatch(keyset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            slots = _number_slots(spec, args)
            if slots:
                return _call_with_numbers(plain_redispatch, spec, keyset, args, kwargs, slots)
            return redispatch_op(keyset & after, *args, **kwargs)

        return redispatch
    kernel = torch.library.get_kernel(spec.qualified, key)
    call_boxed = kernel.call_boxed

    def plain_boxed(keyset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return call_boxed(keyset, *args, **kwargs)

    tensor_slots = spec.tensor_slots
    number_types = _NUMBER_TYPES

    def boxed(keyset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        count = len(args)
        for i in tensor_slots:
            if i < count and args[i].__class__ in number_types:
                return _call_with_numbers(
                    plain_boxed, spec, keyset, args, kwargs, _number_slots(spec, args)
                )
        return call_boxed(keyset, *args, **kwargs)

    return boxed


def _factory_original(op: Any) -> Original:
    """What the generated ``BackendSelect`` kernel of a factory op does: pick the backend."""
    import torch

    keys = {
        "cpu": torch._C.DispatchKey.CPU,
        "cuda": torch._C.DispatchKey.CUDA,
    }

    def redispatch(keyset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        device = kwargs.get("device")
        kind = torch.device(device).type if device is not None else "cpu"
        key = keys.get(kind)
        if key is None:  # another backend: let the dispatcher choose from scratch
            with state.bypass():
                return op(*args, **kwargs)
        return op.redispatch(torch._C.DispatchKeySet(key), *args, **kwargs)

    return redispatch
