"""Real (and the complex dtypes of ``exp2``/``sinc``) ops with an exact elementwise rewrite.

The real special functions with no closed form in precompiled kernels (``lgamma``,
``digamma``, ``erfinv``, the Bessel family, ``gcd``...) are not listed here: the guard runs
them on the CPU (see :func:`blackwell_compat.ops.rewrites.round_trip`).
"""

from __future__ import annotations

import math
from typing import Any

from ..spec import OverloadSpec
from .complex_ops import EXP2_COMPLEX, SINC_COMPLEX


def _torch() -> Any:
    import torch

    return torch


def _compute_dtype(x: Any) -> tuple[Any, Any]:
    """(dtype to compute in, dtype of the result) for a real unary float op."""
    torch = _torch()
    dtype = x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32, dtype
    return dtype, dtype


def _exp2(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    x = bound["self"]
    if x.is_complex():
        return EXP2_COMPLEX(x)
    work, out = _compute_dtype(x)
    return torch.pow(2.0, x.to(work)).to(out)


def _sinc(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    x = bound["self"]
    if x.is_complex():
        return SINC_COMPLEX(x)
    work, out = _compute_dtype(x)
    x = x.to(work)
    product = x * math.pi
    safe = torch.where(x == 0, torch.ones_like(product), product)
    return torch.where(x == 0, torch.ones_like(x), torch.sin(safe) / safe).to(out)


def _entr(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    x = bound["self"]
    work, out = _compute_dtype(x)
    x = x.to(work)
    positive = x > 0
    safe = torch.where(positive, x, torch.ones_like(x))
    value = torch.where(positive, -x * torch.log(safe), torch.full_like(x, -math.inf))
    value = torch.where(x == 0, torch.zeros_like(x), value)
    value = torch.where(torch.isnan(x), x, value)
    return value.to(out)


REWRITES: dict[str, Any] = {
    "exp2": _exp2,
    "sinc": _sinc,
    "special_entr": _entr,
}
