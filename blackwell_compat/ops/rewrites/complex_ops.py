"""Complex ops rewritten with real arithmetic on ``z.real`` / ``z.imag``.

Everything here uses only kernels PyTorch precompiles: real elementwise math (``hypot``,
``atan2``, ``exp``, ``log``, ``log1p``, ``sin``, ``cos``, ``sinh``, ``cosh``, ``sqrt``...),
``torch.complex`` and the complex64/complex128 ``mul``/``div``/``add``/``sub``/``sum``
kernels.  complex32 inputs are computed in complex64 (PyTorch's own math type for them) and
rounded back.  Calls to other inventory ops made from here (``torch.exp`` on a complex tensor,
say) go through the dispatcher again and are rewritten in turn.

Special values follow C99 Annex G where PyTorch's CPU kernels do; magnitudes are handled
without overflow (``hypot``, not ``sqrt(re**2 + im**2)``; scaled exponentials near the float
limit).
"""

from __future__ import annotations

import math
from typing import Any

from ..rules import tensor_result_dtype
from ..spec import OverloadSpec

_LN2 = math.log(2.0)
_LN10 = math.log(10.0)
#: log of the largest finite value, per working dtype.
_LOG_MAX = {"float32": 88.72283172607422, "float64": 709.782712893384}


def _torch() -> Any:
    import torch

    return torch


def _real_dtype(dtype: Any) -> Any:
    torch = _torch()
    return {
        torch.complex32: torch.float16,
        torch.complex64: torch.float32,
        torch.complex128: torch.float64,
    }[dtype]


def parts(z: Any) -> tuple[Any, Any]:
    """Real and imaginary parts in the working precision (float32 for complex32)."""
    torch = _torch()
    re, im = z.real, z.imag
    if z.dtype == torch.complex32:
        re, im = re.float(), im.float()
    return re, im


def assemble(re: Any, im: Any, dtype: Any) -> Any:
    """A complex tensor of *dtype* from real and imaginary parts."""
    torch = _torch()
    out = torch.complex(re, im)
    if dtype == torch.complex32:
        out = out.to(torch.complex32)
    return out


def widen(value: Any) -> Any:
    """complex32 tensors become complex64 and float16 ones float32 (the precision complex32
    kernels compute in); everything else is returned as is.

    A float16 operand must be widened too: ``x_f16 * 1j`` is a complex32 product, and left as
    it is the rewrite would reach the same complex32 kernel again.
    """
    torch = _torch()
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.complex32:
            return value.to(torch.complex64)
        if value.dtype == torch.float16:
            return value.to(torch.float32)
    return value


def _log_max(re: Any) -> float:
    return _LOG_MAX["float64" if re.dtype == _torch().float64 else "float32"]


#: below this magnitude both parts are scaled up by 2**_SCALE before hypot/sqrt, so that
#: subnormal inputs keep their precision (the scale is a power of two: exact both ways).
_TINY = {"float32": 2.0**-60, "float64": 2.0**-500}
_SCALE = {"float32": 100, "float64": 900}


def _kind(x: Any) -> str:
    return "float64" if x.dtype == _torch().float64 else "float32"


def _tiny(re: Any, im: Any) -> Any:
    """Where both parts are so small that hypot/sqrt lose precision (subnormal range)."""
    torch = _torch()
    return torch.maximum(re.abs(), im.abs()) < _TINY[_kind(re)]


def _any(mask: Any) -> bool:
    """Whether a fix-up branch is needed: checked on the CPU, assumed on a GPU (no sync)."""
    return bool(mask.any()) if mask.device.type == "cpu" else True


# -- building blocks on (re, im) pairs ------------------------------------------------------------


def c_abs(re: Any, im: Any) -> Any:
    return _torch().hypot(re, im)


def c_exp(re: Any, im: Any) -> tuple[Any, Any]:
    torch = _torch()
    cos, sin = torch.cos(im), torch.sin(im)
    ex = torch.exp(re)
    out_re, out_im = ex * cos, ex * sin
    big = re > _log_max(re)
    if _any(big):
        # exp(re) overflows although exp(re) * cos(im) may not: split the exponential.
        half = torch.exp(re * 0.5)
        out_re = torch.where(big, (half * cos) * half, out_re)
        out_im = torch.where(big, (half * sin) * half, out_im)
    # A real argument gives a real result, with the sign of the zero imaginary part kept.
    real_arg = im == 0
    out_re = torch.where(real_arg, ex, out_re)
    out_im = torch.where(real_arg, im, out_im)
    # exp(-inf + i*y) is +-0 for every y; exp(+inf + i*y) is inf + i*nan for infinite/nan y.
    bad_im = ~torch.isfinite(im)
    neg_inf = (re == -math.inf) & bad_im
    pos_inf = (re == math.inf) & bad_im
    zero = torch.zeros_like(out_re)
    out_re = torch.where(neg_inf, zero, torch.where(pos_inf, re, out_re))
    out_im = torch.where(
        neg_inf, zero, torch.where(pos_inf, torch.full_like(zero, math.nan), out_im)
    )
    return out_re, out_im


def c_log(re: Any, im: Any) -> tuple[Any, Any]:
    torch = _torch()
    r = torch.hypot(re, im)
    log_r = torch.log(r)
    tiny = _tiny(re, im) & (r != 0)
    if _any(tiny):
        k = _SCALE[_kind(re)]
        scaled = torch.log(torch.hypot(re * 2.0**k, im * 2.0**k)) - k * _LN2
        log_r = torch.where(tiny, scaled, log_r)
    # hypot overflows only when |z| exceeds the float range: scale by the larger part.
    overflow = torch.isinf(r) & torch.isfinite(re) & torch.isfinite(im)
    if _any(overflow):
        big = torch.maximum(re.abs(), im.abs())
        small = torch.minimum(re.abs(), im.abs())
        ratio = small / big
        scaled = torch.log(big) + 0.5 * torch.log1p(ratio * ratio)
        log_r = torch.where(overflow, scaled, log_r)
    return log_r, torch.atan2(im, re)


def c_sqrt(re: Any, im: Any) -> tuple[Any, Any]:
    torch = _torch()
    tiny = _tiny(re, im)
    if _any(tiny):
        # sqrt(z) = sqrt(z * 4**k) / 2**k, computed where both parts are subnormal-small.
        k = _SCALE[_kind(re)] // 2
        big_re, big_im = _sqrt_core(re * 4.0**k, im * 4.0**k)
        out_re, out_im = _sqrt_core(re, im)
        return (
            torch.where(tiny, big_re * 2.0**-k, out_re),
            torch.where(tiny, big_im * 2.0**-k, out_im),
        )
    return _sqrt_core(re, im)


def _sqrt_core(re: Any, im: Any) -> tuple[Any, Any]:
    torch = _torch()
    abs_re = re.abs()
    r = torch.hypot(re, im)
    total = abs_re + r
    t = torch.sqrt(total * 0.5)
    overflow = torch.isinf(total) & torch.isfinite(re) & torch.isfinite(im)
    if _any(overflow):
        # (|re| + r) / 2 = 2 * (|re|/4 + r/4), and the quarter terms cannot overflow.
        quarter = abs_re * 0.25 + torch.hypot(re * 0.25, im * 0.25)
        t = torch.where(overflow, torch.sqrt(quarter) * math.sqrt(2.0), t)
    positive = re >= 0
    other = im / (t * 2)
    out_re = torch.where(positive, t, other.abs())
    out_im = torch.where(positive, other, torch.copysign(t, im))
    # sqrt(+-0 + i*y) for y = +-0, and sqrt(x +- i*inf) = inf +- i*inf for every x.
    zero = (re == 0) & (im == 0)
    inf_im = torch.isinf(im)
    out_re = torch.where(zero, torch.zeros_like(t), torch.where(inf_im, im.abs(), out_re))
    out_im = torch.where(zero | inf_im, im, out_im)
    return out_re, out_im


def _sinh_cosh_times(x: Any, factor_sinh: Any, factor_cosh: Any) -> tuple[Any, Any]:
    """``(sinh(x) * factor_sinh, cosh(x) * factor_cosh)`` without overflow near the limit."""
    torch = _torch()
    out_s = torch.sinh(x) * factor_sinh
    out_c = torch.cosh(x) * factor_cosh
    big = x.abs() > _log_max(x) - 1.0
    if _any(big):
        half = torch.exp(x.abs() * 0.5)
        # (half * factor) * (half / 2): halving the factor first could underflow it to 0.
        scaled_c = (half * factor_cosh) * (half * 0.5)
        scaled_s = torch.copysign(torch.ones_like(x), x) * ((half * factor_sinh) * (half * 0.5))
        out_s = torch.where(big, scaled_s, out_s)
        out_c = torch.where(big, scaled_c, out_c)
    return out_s, out_c


def c_sinh(re: Any, im: Any) -> tuple[Any, Any]:
    torch = _torch()
    out_re, out_im = _sinh_cosh_times(re, torch.cos(im), torch.sin(im))
    # sinh(x + i0) = sinh(x) + i0 (the real part is exact already); sinh(0 + iy) = 0 + i sin(y).
    out_im = torch.where(im == 0, im, out_im)
    imag_arg = re == 0
    out_re = torch.where(imag_arg, re, out_re)
    out_im = torch.where(imag_arg, torch.sin(im), out_im)
    return out_re, out_im


def c_cosh(re: Any, im: Any) -> tuple[Any, Any]:
    torch = _torch()
    out_im, out_re = _sinh_cosh_times(re, torch.sin(im), torch.cos(im))
    out_im = torch.where(im == 0, im * torch.copysign(torch.ones_like(re), re), out_im)
    imag_arg = re == 0
    out_re = torch.where(imag_arg, torch.cos(im), out_re)
    out_im = torch.where(imag_arg, re * torch.sin(im), out_im)
    return out_re, out_im


def c_sin(re: Any, im: Any) -> tuple[Any, Any]:
    # sin(z) = -i sinh(iz), iz = -im + i re
    a, b = c_sinh(-im, re)
    return b, -a


def c_cos(re: Any, im: Any) -> tuple[Any, Any]:
    # cos(z) = cosh(iz)
    return c_cosh(-im, re)


#: above this magnitude atanh(z) = atanh(1/z) +- i*pi/2 with atanh(1/z) = 1/z to working
#: precision, and below it the squares of the direct formula cannot overflow.
_ATANH_BIG = {"float32": 1e18, "float64": 1e150}


def c_atanh(re: Any, im: Any) -> tuple[Any, Any]:
    torch = _torch()
    # atanh(-z) = -atanh(z): work with re >= 0, where the formulas below do not cancel.
    sign = torch.copysign(torch.ones_like(re), re)
    x, y = re.abs(), im * sign
    one_minus = 1 - x
    denom = one_minus * one_minus + y * y
    ratio = 4 * x / denom
    # Re = log(|1+z|^2 / |1-z|^2) / 4, as log1p(ratio) / 4 for small ratios and directly
    # (with hypot, which neither underflows nor overflows) near z = 1.
    direct = 0.25 * torch.log(4 * x + denom) - 0.5 * torch.log(torch.hypot(one_minus, y))
    out_re = torch.where(ratio > 1, direct, 0.25 * torch.log1p(ratio))
    out_im = 0.5 * torch.atan2(2 * y, one_minus * (1 + x) - y * y)
    big = (
        torch.maximum(x, y.abs())
        > _ATANH_BIG["float64" if re.dtype == torch.float64 else "float32"]
    )
    if _any(big):
        r = torch.hypot(x, y)
        half_pi = torch.copysign(torch.full_like(y, math.pi / 2), y)
        out_re = torch.where(big, (x / r) / r, out_re)
        out_im = torch.where(big, half_pi - (y / r) / r, out_im)
    # Infinite arguments: +-0 + i*pi/2 (C99), a nan imaginary part stays nan.
    inf = torch.isinf(x) | torch.isinf(y)
    half_pi = torch.full_like(out_im, math.pi / 2)
    out_re = torch.where(inf, torch.zeros_like(out_re), out_re)
    inf_im = torch.where(torch.isnan(y), y, torch.copysign(half_pi, y))
    out_im = torch.where(inf, inf_im, out_im)
    return out_re * sign, out_im * sign


def c_atan(re: Any, im: Any) -> tuple[Any, Any]:
    # atan(z) = -i atanh(iz)
    a, b = c_atanh(-im, re)
    return b, -a


# -- rewrites (functional form, arguments by schema name) ---------------------------------------


def _unary(fn: Any) -> Any:
    def rewrite(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
        z = bound["self"]
        re, im = parts(z)
        out_re, out_im = fn(re, im)
        return assemble(out_re, out_im, z.dtype)

    return rewrite


def _abs(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    z = bound["self"]
    re, im = parts(z)
    return c_abs(re, im).to(_real_dtype(z.dtype))


def _angle(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    z = bound["self"]
    re, im = parts(z)
    return _torch().atan2(im, re).to(_real_dtype(z.dtype))


def _sgn(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    z = bound["self"]
    re, im = parts(z)
    r = torch.hypot(re, im)
    zero = r == 0
    safe = torch.where(zero, torch.ones_like(r), r)
    out_re = torch.where(zero, torch.zeros_like(re), re / safe)
    out_im = torch.where(zero, torch.zeros_like(im), im / safe)
    return assemble(out_re, out_im, z.dtype)


def _neg(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    z = bound["self"]
    re, im = parts(z)
    return assemble(-re, -im, z.dtype)


def _conj_physical(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    z = bound["self"]
    re, im = parts(z)
    return assemble(re, -im, z.dtype)


def _scaled_log(factor: float) -> Any:
    def fn(re: Any, im: Any) -> tuple[Any, Any]:
        log_re, log_im = c_log(re, im)
        return log_re / factor, log_im / factor

    return fn


def _rsqrt(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    z = bound["self"]
    re, im = parts(z)
    s_re, s_im = c_sqrt(re, im)
    root = torch.complex(s_re, s_im)
    out = torch.div(torch.ones_like(root), root)
    return out.to(z.dtype) if z.dtype == torch.complex32 else out


def _sigmoid(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    z = bound["self"]
    re, im = parts(z)
    e_re, e_im = c_exp(-re, -im)
    out = 1 / torch.complex(1 + e_re, e_im)
    return out.to(z.dtype) if z.dtype == torch.complex32 else out


def _exp2_complex(z: Any) -> Any:
    re, im = parts(z)
    out_re, out_im = c_exp(re * _LN2, im * _LN2)
    return assemble(out_re, out_im, z.dtype)


def _sinc_complex(z: Any) -> Any:
    torch = _torch()
    re, im = parts(z)
    p_re, p_im = re * math.pi, im * math.pi
    s_re, s_im = c_sin(p_re, p_im)
    zero = (re == 0) & (im == 0)
    one = torch.ones_like(re)
    num = torch.complex(torch.where(zero, one, s_re), torch.where(zero, torch.zeros_like(im), s_im))
    den = torch.complex(torch.where(zero, one, p_re), torch.where(zero, torch.zeros_like(im), p_im))
    out = num / den
    return out.to(z.dtype) if z.dtype == torch.complex32 else out


def _pow(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    base, exponent = bound["self"], bound["exponent"]
    chalf = torch.complex32
    if torch.result_type(base, exponent) == chalf:
        result = torch.pow(widen(base), widen(exponent))
        return result.to(chalf)
    # complex64/complex128 with a real exponent of +-0.5: PyTorch uses sqrt / rsqrt.
    value = exponent.item() if isinstance(exponent, torch.Tensor) else exponent
    if value == 0.5:
        result = torch.sqrt(base)
    else:
        result = torch.rsqrt(base)
    target = torch.result_type(base, exponent)
    return result.to(target) if result.dtype != target else result


def _mul(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    return torch.mul(widen(bound["self"]), widen(bound["other"])).to(torch.complex32)


def _div(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    return torch.div(widen(bound["self"]), widen(bound["other"])).to(torch.complex32)


def _nonzero(value: Any) -> Any:
    torch = _torch()
    if isinstance(value, torch.Tensor) and value.is_complex():
        re, im = parts(value)
        return (re != 0) | (im != 0)
    return value != 0


def _logical(op: str) -> Any:
    def rewrite(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
        torch = _torch()
        a, b = _nonzero(bound["self"]), _nonzero(bound["other"])
        return getattr(torch, op)(a, b)

    return rewrite


def _complex_abs(value: Any) -> Any:
    torch = _torch()
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            re, im = parts(value)
            return torch.hypot(re, im)
        return value.abs()
    return abs(value)


def _lerp(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    start, end, weight = bound["self"], bound["end"], bound["weight"]
    out_dtype = start.dtype
    for name, value in (("end", end), ("weight", weight)):
        if isinstance(value, torch.Tensor) and value.dtype != out_dtype:
            # PyTorch's lerp takes no mixed dtypes.
            raise RuntimeError(
                f"expected dtype {out_dtype} for `{name}` but got dtype {value.dtype}"
            )
    start, end, weight = widen(start), widen(end), widen(weight)
    diff = end - start
    near_start = _complex_abs(weight) < 0.5
    low = start + weight * diff
    high = end - diff * (1 - weight)
    if isinstance(near_start, torch.Tensor):
        result = torch.where(near_start, low, high)
    else:
        result = low if near_start else high
    return result.to(out_dtype)


def _addcmul(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    a, b, c = bound["self"], bound["tensor1"], bound["tensor2"]
    value = bound.get("value", 1)
    dtype = tensor_result_dtype([a, b, c])
    return (a + value * (b * c)).to(dtype)


def _addcdiv(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    a, b, c = bound["self"], bound["tensor1"], bound["tensor2"]
    value = bound.get("value", 1)
    dtype = tensor_result_dtype([a, b, c])
    return (a + value * (b / c)).to(dtype)


def _sigmoid_backward(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    grad, out = bound["grad_output"], bound["output"]
    dtype = tensor_result_dtype([grad, out])
    grad, out = widen(grad), widen(out)
    return (grad * torch.conj((1 - out) * out).resolve_conj()).to(dtype)


def _tanh_backward(spec: OverloadSpec, bound: dict[str, Any]) -> Any:
    torch = _torch()
    grad, out = bound["grad_output"], bound["output"]
    dtype = tensor_result_dtype([grad, out])
    grad, out = widen(grad), widen(out)
    return (grad * torch.conj(1 - out * out).resolve_conj()).to(dtype)


REWRITES: dict[str, Any] = {
    "abs": _abs,
    "angle": _angle,
    "sgn": _sgn,
    "neg": _neg,
    "conj_physical": _conj_physical,
    "exp": _unary(c_exp),
    "log": _unary(c_log),
    "log10": _unary(_scaled_log(_LN10)),
    "log2": _unary(_scaled_log(_LN2)),
    "sqrt": _unary(c_sqrt),
    "rsqrt": _rsqrt,
    "sin": _unary(c_sin),
    "cos": _unary(c_cos),
    "sinh": _unary(c_sinh),
    "cosh": _unary(c_cosh),
    "atan": _unary(c_atan),
    "atanh": _unary(c_atanh),
    "sigmoid": _sigmoid,
    "pow": _pow,
    "mul": _mul,
    "div": _div,
    "logical_and": _logical("logical_and"),
    "logical_or": _logical("logical_or"),
    "logical_xor": _logical("logical_xor"),
    "lerp": _lerp,
    "addcmul": _addcmul,
    "addcdiv": _addcdiv,
    "sigmoid_backward": _sigmoid_backward,
    "tanh_backward": _tanh_backward,
}

#: used by real_ops for the complex dtypes of exp2 and sinc
EXP2_COMPLEX = _exp2_complex
SINC_COMPLEX = _sinc_complex
