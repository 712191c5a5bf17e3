"""Reductions without the jitted reduction kernels.

* ``sum`` (complex32) and ``nansum`` (complex) sum in complex64/complex128, whose reduction
  kernels are precompiled;
* ``prod`` of real dtypes multiplies with ``cumprod`` (a precompiled scan) and keeps the last
  element (complex products take the CPU round trip),
  accumulating in the dtype PyTorch's CUDA reduction uses (float32 for half types, complex64
  for complex32, the dtype itself otherwise), so that it overflows where PyTorch's does.
"""

from __future__ import annotations

from typing import Any

from ..spec import OverloadSpec
from .complex_ops import parts, widen


def _torch() -> Any:
    import torch

    return torch


def output_dtype(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    """The dtype the reduction produces: ``dtype=``, else the ``out=`` tensor, else promoted."""
    torch = _torch()
    dtype = bound.get("dtype")
    if dtype is not None:
        return dtype
    for name in spec.mutable:
        out = bound.get(name)
        if isinstance(out, torch.Tensor):
            return out.dtype
    self = bound["self"]
    if spec.entry.name in ("sum", "prod") and not (
        self.dtype.is_floating_point or self.dtype.is_complex
    ):
        return torch.int64
    return self.dtype


def _dims(dim: Any, ndim: int) -> list[int] | None:
    """``None`` for "every dimension", else the list of dimensions (wrapped)."""
    if dim is None:
        return None
    dims = [dim] if isinstance(dim, int) else list(dim)
    if not dims:
        return None
    return [d % max(ndim, 1) for d in dims]


def _sum(x: Any, dim: Any, keepdim: bool) -> Any:
    torch = _torch()
    dims = _dims(dim, x.dim())
    if dims is None:
        result = torch.sum(x)
        if keepdim:
            result = result.reshape([1] * x.dim())
        return result
    return torch.sum(x, dim=dims, keepdim=keepdim)


def _sum_rewrite(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    dtype = output_dtype(spec, bound)
    x = widen(bound["self"].to(dtype))
    return _sum(x, bound.get("dim"), bool(bound.get("keepdim", False))).to(dtype)


def _nansum_rewrite(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    dtype = output_dtype(spec, bound)
    z = bound["self"].to(dtype)
    re, im = parts(z)
    z = widen(z)
    z = torch.where(torch.isnan(re) | torch.isnan(im), torch.zeros_like(z), z)
    return _sum(z, bound.get("dim"), bool(bound.get("keepdim", False))).to(dtype)


def _accumulator(dtype: Any) -> Any:
    """The dtype PyTorch's CUDA product reduction accumulates *dtype* in.

    Not wider: a product that overflows in PyTorch's own kernel (to inf, or to nan once an inf
    meets a zero) must overflow here too.
    """
    torch = _torch()
    if dtype == torch.complex32:
        return torch.complex64
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    if dtype.is_complex or dtype.is_floating_point:
        return dtype
    return torch.int64


def _prod_rewrite(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    dtype = output_dtype(spec, bound)
    if dtype.is_complex:
        # cumprod's complex products recover from inf * 0 where PyTorch's reduction gives nan:
        # complex products take the CPU round trip (PyTorch's own kernel).
        return NotImplemented
    x = bound["self"].to(dtype).to(_accumulator(dtype))
    dim = bound.get("dim")
    if dim is None:
        result = torch.cumprod(x.reshape(-1), 0)[-1]
    elif x.dim() == 0:
        result = x.clone()
    else:
        dim = dim % x.dim()
        result = torch.cumprod(x, dim).select(dim, -1)
        if bound.get("keepdim", False):
            result = result.unsqueeze(dim)
    return result.to(dtype)


REWRITES: dict[str, Any] = {
    "sum": _sum_rewrite,
    "nansum": _nansum_rewrite,
    "prod": _prod_rewrite,
}
