"""Sample calls for every Jiterator inventory entry, used by the emulation, guard and audit tests.

``calls(entry, dtype)`` returns ``[(form, fn), ...]``: each ``fn()`` makes one call of the op in
one user-facing form (functional, method, in-place, ``out=``) on small CPU tensors whose values
lie in the op's domain.  ``forms(entry, dtype)`` keeps the ones PyTorch's CPU kernels can
compute (complex32 mostly not; complex ``abs_`` never), so tests only expect what the CPU can
do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from blackwell_compat.ops import inventory

Form = tuple[str, Callable[[], Any]]


def tensor(
    dtype: torch.dtype, values: list[Any] | None = None, shape: tuple[int, ...] = (4,)
) -> torch.Tensor:
    """A small tensor of *dtype* with values suited to most ops (positive, below 1)."""
    if dtype.is_complex:
        base = values or [0.3 + 0.2j, 0.5 - 0.1j, -0.25 + 0.4j, 0.1 + 0.05j]
        work = torch.tensor(base, dtype=torch.complex64)
    elif dtype.is_floating_point:
        base = values or [0.3, 0.5, 0.25, 0.75]
        work = torch.tensor(base, dtype=torch.float32)
    else:
        base = values or [12, 18, 7, 30]
        work = torch.tensor(base, dtype=torch.int64)
    work = (
        work[: shape[0]]
        if shape == (len(base),)
        else work.reshape(-1)[: int(torch.tensor(shape).prod())].reshape(shape)
    )
    return work.to(dtype)


def _unary(
    name: str, dtype: torch.dtype, *, method: bool = True, inplace: bool = True
) -> list[Form]:
    fn = (
        getattr(torch, name)
        if hasattr(torch, name)
        else getattr(torch.special, name.removeprefix("special_"))
    )
    x = tensor(dtype)
    forms: list[Form] = [("functional", lambda: fn(x))]
    if method and hasattr(torch.Tensor, name):
        forms.append(("method", lambda: getattr(x, name)()))
    if inplace and hasattr(torch.Tensor, name + "_"):
        forms.append(("in-place", lambda: getattr(x.clone(), name + "_")()))
    out_dtype = fn(x).dtype if _works(lambda: fn(x)) else dtype
    forms.append(("out=", lambda: fn(x, out=torch.empty(0, dtype=out_dtype))))
    return forms


def _works(fn: Callable[[], Any]) -> bool:
    try:
        fn()
    except Exception:
        return False
    return True


def other(dtype: torch.dtype) -> torch.Tensor:
    """A second operand, different from :func:`tensor` (no flip: complex32 has none on CPU)."""
    if dtype.is_complex:
        return tensor(dtype, [0.1 - 0.3j, 0.2 + 0.6j, 0.45 + 0.1j, -0.3 - 0.2j])
    if dtype.is_floating_point:
        return tensor(dtype, [0.6, 0.2, 0.45, 0.35])
    return tensor(dtype, [8, 27, 21, 12])


def _backward(name: str, dtype: torch.dtype) -> Callable[[], Any]:
    """Forward outside emulation, then the backward whose kernel is *name*_backward."""

    def run() -> Any:
        from blackwell_compat import emulation

        x = tensor(dtype).requires_grad_()
        with emulation.suspended():
            y = getattr(torch, name)(x)
        y.backward(torch.ones_like(y))
        return x.grad

    return run


def _binary(name: str, dtype: torch.dtype, second: Any = None) -> list[Form]:
    fn = getattr(torch, name)
    x = tensor(dtype)
    y = other(dtype) if second is None else second
    forms: list[Form] = [("functional", lambda: fn(x, y))]
    if hasattr(torch.Tensor, name + "_"):
        forms.append(("in-place", lambda: getattr(x.clone(), name + "_")(y)))
    out_dtype = fn(x, y).dtype if _works(lambda: fn(x, y)) else dtype
    forms.append(("out=", lambda: fn(x, y, out=torch.empty(0, dtype=out_dtype))))
    return forms


def _special_unary(name: str, dtype: torch.dtype) -> list[Form]:
    fn = getattr(torch.special, name.removeprefix("special_"))
    x = tensor(dtype)
    out_dtype = fn(x).dtype if _works(lambda: fn(x)) else dtype
    return [
        ("functional", lambda: fn(x)),
        ("out=", lambda: fn(x, out=torch.empty(0, dtype=out_dtype))),
    ]


def _polynomial(name: str, dtype: torch.dtype) -> list[Form]:
    fn = getattr(torch.special, name.removeprefix("special_"))
    x = tensor(dtype)
    n = torch.tensor([0, 1, 2, 3], dtype=dtype)
    return [
        ("functional", lambda: fn(x, n)),
        ("scalar n", lambda: fn(x, 3)),
        ("out=", lambda: fn(x, n, out=torch.empty(0, dtype=dtype))),
    ]


def _reduction(name: str, dtype: torch.dtype) -> list[Form]:
    fn = getattr(torch, name)
    x = tensor(dtype, shape=(4,)).reshape(2, 2)
    out_dtype = fn(x, 0).dtype if _works(lambda: fn(x, 0)) else dtype
    forms: list[Form] = [
        ("functional", lambda: fn(x)),
        ("method", lambda: getattr(x, name)()),
        ("dim", lambda: fn(x, 0)),
        ("keepdim", lambda: fn(x, 1, keepdim=True)),
        ("out=", lambda: fn(x, 0, out=torch.empty(0, dtype=out_dtype))),
    ]
    return forms


def calls(entry: str, dtype: torch.dtype) -> list[Form]:
    """Every user-facing form of *entry* on *dtype* (CPU tensors)."""
    x = tensor(dtype)
    if entry in ("sum", "nansum", "prod"):
        return _reduction(entry, dtype)
    if entry == "pow":
        forms: list[Form] = []
        if dtype == torch.complex32:
            forms += [
                ("tensor ** 3", lambda: x**3),
                ("tensor ** tensor", lambda: x**x),
                ("number ** tensor", lambda: 2**x),
            ]
        forms += [
            ("tensor ** 0.5", lambda: x**0.5),
            ("torch.pow(z, -0.5)", lambda: torch.pow(x, -0.5)),
            ("in-place", lambda: x.clone().pow_(0.5)),
            ("out=", lambda: torch.pow(x, 0.5, out=torch.empty(0, dtype=dtype))),
            ("0-dim exponent", lambda: x ** torch.tensor(0.5)),
        ]
        return forms
    if entry in ("mul", "div"):
        fn = getattr(torch, entry)
        return [
            ("functional", lambda: fn(x, x)),
            ("operator", lambda: x * x if entry == "mul" else x / x),
            ("scalar", lambda: fn(x, 2.0)),
            ("in-place", lambda: getattr(x.clone(), entry + "_")(x)),
            ("out=", lambda: fn(x, x, out=torch.empty(0, dtype=dtype))),
        ]
    if entry in ("logical_and", "logical_or", "logical_xor"):
        return _binary(entry, dtype)
    if entry == "logaddexp":
        return [
            ("functional", lambda: torch.logaddexp(x, other(dtype))),
            ("out=", lambda: torch.logaddexp(x, other(dtype), out=torch.empty(0, dtype=dtype))),
        ]
    if entry in ("gcd", "lcm"):
        return _binary(entry, dtype)
    if entry == "lerp":
        return [
            ("scalar weight", lambda: torch.lerp(x, other(dtype), 0.3)),
            ("tensor weight", lambda: torch.lerp(x, other(dtype), x)),
            ("in-place", lambda: x.clone().lerp_(other(dtype), 0.7)),
            ("out=", lambda: torch.lerp(x, x, 0.5, out=torch.empty(0, dtype=dtype))),
        ]
    if entry in ("addcmul", "addcdiv"):
        fn = getattr(torch, entry)
        return [
            ("functional", lambda: fn(x, x, other(dtype), value=2)),
            ("in-place", lambda: getattr(x.clone(), entry + "_")(x, x)),
            ("out=", lambda: fn(x, x, x, out=torch.empty(0, dtype=dtype))),
        ]
    if entry in ("sigmoid_backward", "tanh_backward"):
        op = getattr(torch.ops.aten, entry)
        return [
            ("aten", lambda: op(x, other(dtype))),
            ("autograd", _backward(entry.removesuffix("_backward"), dtype)),
        ]
    if entry == "polygamma":
        return [
            ("n=0", lambda: torch.polygamma(0, x)),
            ("n=1", lambda: torch.polygamma(1, x)),
            ("n=2", lambda: torch.special.polygamma(2, x)),
            ("in-place", lambda: x.clone().polygamma_(2)),
            ("out=", lambda: torch.polygamma(2, x, out=torch.empty(0, dtype=dtype))),
        ]
    if entry == "kaiser_window":
        return [
            ("beta", lambda: torch.kaiser_window(8, True, 12.0, dtype=dtype)),
            ("default", lambda: torch.kaiser_window(8, dtype=dtype)),
            ("periodic", lambda: torch.kaiser_window(8, False, dtype=dtype)),
        ]
    if entry == "special_zeta":
        return [
            ("functional", lambda: torch.special.zeta(x + 1.5, x)),
            ("scalar q", lambda: torch.special.zeta(x + 1.5, 2.0)),
            ("out=", lambda: torch.special.zeta(x + 1.5, x, out=torch.empty(0, dtype=dtype))),
        ]
    if "polynomial" in entry:
        return _polynomial(entry, dtype)
    if entry.startswith("special_"):
        return _special_unary(entry, dtype)
    if entry == "abs":
        extra: list[Form] = [("absolute", lambda: torch.absolute(x)), ("abs()", lambda: abs(x))]
        return [*_unary("abs", dtype), *extra]
    if entry == "neg":
        return [*_unary("neg", dtype), ("-z", lambda: -x), ("negative", lambda: torch.negative(x))]
    if entry == "conj_physical":
        return [
            ("functional", lambda: torch.conj_physical(x)),
            ("in-place", lambda: x.clone().conj_physical_()),
            ("out=", lambda: torch.conj_physical(x, out=torch.empty(0, dtype=dtype))),
        ]
    if entry == "angle":
        return _unary("angle", dtype, inplace=False)
    return _unary(entry, dtype)


@functools.cache
def working_forms(entry: str, dtype: torch.dtype) -> tuple[str, ...]:
    """The forms of *entry* that PyTorch's CPU kernels run for *dtype* (outside emulation)."""
    from blackwell_compat import emulation

    with emulation.suspended():
        return tuple(form for form, fn in calls(entry, dtype) if _works(fn))


def forms(entry: str, dtype: torch.dtype) -> list[Form]:
    """The sample calls of *entry* on *dtype* that the CPU can compute."""
    working = working_forms(entry, dtype)
    return [(form, fn) for form, fn in calls(entry, dtype) if form in working]


def dtypes_of(entry: inventory.JitOp) -> list[torch.dtype]:
    return sorted((getattr(torch, d) for d in entry.dtypes), key=str)
