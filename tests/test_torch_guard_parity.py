"""Parity of the op guard's rewrites with PyTorch's own CPU kernels (hypothesis-driven).

Every guarded op and dtype is compared with the original CPU kernel on values that include
inf, nan, -0.0, subnormals, magnitudes near the float limits, empty, non-contiguous and
broadcast tensors, ``out=`` and in-place forms; differentiable ops also compare gradients.

Tolerances are ``torch.testing.assert_close`` defaults for the dtype, with one relaxation,
applied to every comparison and stated here once: a complex value counts as NaN when either
of its parts is NaN.  C99 distinguishes ``nan + 0j`` from ``nan + nanj``, but PyTorch's CPU
kernels themselves disagree on it between their vectorised and scalar paths (``sgn(inf+0j)``
gives ``nan+0j`` in one and ``nan+nanj`` in the other), so no rewrite can match both.

The reference runs in the same process with emulation suspended for the calling thread, so it
is computed by PyTorch's original kernels; the guarded call runs inside ``bc.emulate()`` with the
``torch`` patch applied.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import jit_samples, overlap_cases

import blackwell_compat as bc
from blackwell_compat import emulation, state
from blackwell_compat.ops import inventory
from blackwell_compat.ops.discovery import overload_specs
from blackwell_compat.ops.spec import OverloadSpec

warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ENTRIES = inventory.by_name(torch.__version__)


@pytest.fixture
def guarded() -> Iterator[None]:
    """Emulation on, guard applied, for the whole test (all hypothesis examples)."""
    with bc.emulate("sm_121"):
        report = bc.apply(only="torch")
        assert report.applied == ["torch"]
        yield
    bc.revert()
    state.reset_for_tests()


def reference(fn: Callable[[], Any]) -> Any:
    with emulation.suspended():
        return fn()


def _canonical(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_complex():
        wide = value.to(torch.complex128) if value.dtype == torch.complex32 else value
        nan = wide.real.isnan() | wide.imag.isnan()
        wide = torch.where(nan, torch.complex(*(torch.full_like(wide.real, math.nan),) * 2), wide)
        return wide.to(value.dtype) if value.dtype != torch.complex32 else wide
    return value


def assert_parity(got: Any, want: Any, **tolerance: Any) -> None:
    if not isinstance(want, torch.Tensor):
        assert got == want
        return
    assert isinstance(got, torch.Tensor)
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype == torch.complex32:
        got, want = got.to(torch.complex64), want.to(torch.complex64)
        tolerance = tolerance or {"rtol": 1e-3, "atol": 1e-5}  # float16 parts
    got, want = _canonical(got), _canonical(want)
    if want.is_complex():
        # A complex value with an infinite part is compared part by part: as a whole, any
        # rounding difference in the finite part makes the difference inf - inf = nan.
        infinite = want.real.isinf() | want.imag.isinf()
        if bool(infinite.any()):
            torch.testing.assert_close(
                torch.view_as_real(got[infinite]),
                torch.view_as_real(want[infinite]),
                equal_nan=True,
                **tolerance,
            )
            got, want = got[~infinite], want[~infinite]
    torch.testing.assert_close(got, want, equal_nan=True, **tolerance)


def _resizing(call: Callable[[], Any], *, resized: bool) -> Any:
    """Run *call* (writing into a wrongly sized ``out=``) and check that it warns about the
    resize exactly when PyTorch's own kernel does (the warning is deprecation noise otherwise
    left in the test log)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    warned = [w for w in caught if "was resized" in str(w.message)]
    assert bool(warned) == resized, [str(w.message) for w in caught]
    return result


# -- value strategies --------------------------------------------------------------------------


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return {
        torch.complex32: torch.float16,
        torch.complex64: torch.float32,
        torch.complex128: torch.float64,
    }.get(dtype, dtype)


def specials(dtype: torch.dtype) -> list[float]:
    info = torch.finfo(_real_dtype(dtype))
    return [
        0.0,
        -0.0,
        math.inf,
        -math.inf,
        math.nan,
        info.tiny,
        info.tiny / 4,  # subnormal
        info.max,
        -info.max,
        info.max / 3,
        1.0,
        -1.0,
        0.5,
        1e-30 if info.bits > 16 else 1e-6,
        88.5 if info.bits == 32 else 700.5,
        -745.0 if info.bits == 64 else -104.0,
    ]


def reals(dtype: torch.dtype, *, bound: float | None = None) -> st.SearchStrategy[float]:
    info = torch.finfo(_real_dtype(dtype))
    width = 64 if info.bits == 64 else 32
    if bound is not None:
        return st.floats(-bound, bound, width=width)
    special = st.sampled_from(specials(dtype))
    return st.one_of(
        special, st.floats(width=width, allow_subnormal=True), st.floats(-4, 4, width=width)
    )


@st.composite
def tensors(
    draw: st.DrawFn,
    dtype: torch.dtype,
    *,
    bound: float | None = None,
    min_size: int = 0,
    max_size: int = 12,
) -> torch.Tensor:
    """1-D tensors of *dtype*, sometimes empty, sometimes non-contiguous (a strided view)."""
    n = draw(st.integers(min_size, max_size))
    strided = draw(st.booleans())
    count = 2 * n if strided else n
    values = st.lists(reals(dtype, bound=bound), min_size=count, max_size=count)
    if dtype.is_complex:
        re = torch.tensor(draw(values), dtype=torch.float64)
        im = torch.tensor(draw(values), dtype=torch.float64)
        t = torch.complex(re, im).to(dtype)
    else:
        t = torch.tensor(draw(values), dtype=torch.float64).to(dtype)
    return t[::2] if strided else t


def dtypes(entry: str, *, cpu_only: bool = True) -> list[torch.dtype]:
    result = []
    for dtype in jit_samples.dtypes_of(ENTRIES[entry]):
        if not cpu_only or jit_samples.working_forms(entry, dtype):
            result.append(dtype)
    return result


def _ids(value: Any) -> str:
    return str(value).replace("torch.", "")


# -- unary elementwise ----------------------------------------------------------------------------

UNARY = [
    name
    for name in (
        "abs",
        "angle",
        "sgn",
        "neg",
        "exp",
        "sqrt",
        "rsqrt",
        "log",
        "log10",
        "log2",
        "sin",
        "cos",
        "sinh",
        "cosh",
        "tan",
        "tanh",
        "atan",
        "atanh",
        "sigmoid",
        "exp2",
        "sinc",
        "conj_physical",
    )
    if name in ENTRIES
]
UNARY_CASES = [(name, dtype) for name in UNARY for dtype in dtypes(name)]


def _sgn_by_definition(z: torch.Tensor) -> torch.Tensor:
    """z / |z| (0 at 0) with PyTorch's CPU abs and division kernels.

    PyTorch's own CPU ``sgn`` squares the parts, so it underflows below |z| ~ 1e-19 (complex64)
    and returns nan+infj for a tiny nonzero z; the definition, with PyTorch's (hypot-based)
    abs and real divisions, does not.
    """
    wide = z.to(torch.complex64) if z.dtype == torch.complex32 else z
    r = wide.abs()
    safe = torch.where(r == 0, 1, r)
    result = torch.complex(wide.real / safe, wide.imag / safe)  # real divisions: no underflow
    return torch.where(r == 0, torch.zeros_like(wide), result).to(z.dtype)


def _unary_reference(name: str, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Any:
    if name == "sgn":
        return reference(lambda: _sgn_by_definition(x))
    return reference(lambda: fn(x))


def _cpu_follows_c99() -> bool:
    """Whether this torch's CPU complex kernels give C99 special values (exp(inf+0j) = inf+0j).

    The rewrites follow C99, as recent PyTorch CPU kernels do; torch 2.6's vectorised kernels
    use the naive formulas at infinities and where an intermediate overflows (exp(inf+0j) =
    inf+nanj, exp(89+0j) = inf+nanj in complex64, atan(3e38j) = -pi/2) and pick the other
    side of atan's and atanh's branch cuts (atan(2j) = -pi/2 + 0.55j), and their vectorised
    sqrt/rsqrt lose precision on subnormal parts (5e-4 relative).  Against those, only complex
    inputs with both parts zero or normal and at most 50 in magnitude, and for atan/atanh off
    the axes, are compared.
    """
    with emulation.suspended():
        value = complex(torch.exp(torch.tensor([complex(math.inf, 0.0)]))[0])
    return value.imag == 0


C99 = _cpu_follows_c99()


def _finite_if_needed(x: torch.Tensor, name: str = "") -> torch.Tensor:
    if C99 or not x.is_complex():
        return x
    tiny = torch.finfo(_real_dtype(x.dtype)).tiny
    re, im = x.real.abs(), x.imag.abs()
    keep = (re <= 50) & (im <= 50)  # False for nan and inf too
    keep &= ((re == 0) | (re >= tiny)) & ((im == 0) | (im >= tiny))
    if name in ("atan", "atanh"):
        keep &= (x.real != 0) & (x.imag != 0)
    return torch.where(keep, x, torch.full_like(x, 0.25 + 0.5j))


@pytest.mark.parametrize(("name", "dtype"), UNARY_CASES, ids=_ids)
@SETTINGS
@given(data=st.data())
def test_unary(guarded: None, name: str, dtype: torch.dtype, data: st.DataObject) -> None:
    fn = getattr(torch, name)
    x = _finite_if_needed(data.draw(tensors(dtype)), name)
    want = _unary_reference(name, fn, x)
    check = _unary_check(name, fn, x, want)
    check(fn(x))
    # out= (including a wrongly sized out tensor, which is resized) and in-place forms
    out = torch.empty(3, dtype=want.dtype)
    returned = _resizing(lambda: fn(x, out=out), resized=tuple(want.shape) != (3,))
    assert returned is out
    check(out)
    if name not in ("abs", "angle") and want.dtype == x.dtype:
        inplace = x.clone()
        getattr(inplace, name + "_")()
        check(inplace)


def _unary_check(
    name: str, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, want: torch.Tensor
) -> Callable[[torch.Tensor], None]:
    """Parity with the CPU result within the stated tolerance; for complex64, where the input is
    ill-conditioned (sigmoid or tanh next to a pole: a one-ulp difference in exp is amplified
    far beyond float32's relative tolerance), a value that misses it must be no farther from
    the exact result (complex128) than twice the CPU's own distance, plus the tolerance."""

    def check(got: torch.Tensor) -> None:
        try:
            assert_parity(got, want)
        except AssertionError:
            if x.dtype != torch.complex64 or got.dtype != want.dtype or got.shape != want.shape:
                raise
            truth = _unary_reference(name, fn, x.to(torch.complex128)).to(torch.complex128)
            finite = torch.isfinite(truth) & torch.isfinite(want)
            g, w, t = (v.to(torch.complex128)[finite] for v in (got, want, truth))
            if not bool(torch.isfinite(g).all()):
                raise
            bound = 2 * (w - t).abs() + 1e-5 + 1.3e-6 * t.abs()
            assert bool(((g - t).abs() <= bound).all()), (got, want, truth)
            assert_parity(got[~finite], want[~finite])

    return check


@pytest.mark.parametrize(
    "name", [n for n in ("exp", "log", "sqrt", "sin", "atanh") if n in ENTRIES]
)
@SETTINGS
@given(data=st.data())
def test_unary_multidimensional_and_transposed(
    guarded: None, name: str, data: st.DataObject
) -> None:
    fn = getattr(torch, name)
    rows = data.draw(st.integers(1, 4))
    x = data.draw(tensors(torch.complex64, min_size=rows * 3, max_size=rows * 3))
    x = _finite_if_needed(x, name).reshape(rows, 3).t()  # non-contiguous 2-D view
    assert_parity(fn(x), reference(lambda: fn(x)))


# -- pow ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=_ids)
@pytest.mark.parametrize("exponent", [0.5, -0.5])
@SETTINGS
@given(data=st.data())
def test_pow_sqrt_exponents(
    guarded: None, dtype: torch.dtype, exponent: float, data: st.DataObject
) -> None:
    x = _finite_if_needed(data.draw(tensors(dtype)))
    assert_parity(x**exponent, reference(lambda: x**exponent))
    # A 0-dim exponent tensor is a "CPU scalar" on CUDA, where PyTorch runs sqrt/rsqrt; the CPU
    # kernel takes its generic path instead (which differs at infinities), so the reference
    # for this form is sqrt/rsqrt, i.e. what the GPU computes.
    scalar = torch.tensor(exponent)
    gpu_kernel = torch.sqrt if exponent > 0 else torch.rsqrt
    assert_parity(torch.pow(x, scalar), reference(lambda: gpu_kernel(x)))
    inplace = x.clone()
    inplace.pow_(exponent)
    assert_parity(inplace, reference(lambda: x**exponent))


@SETTINGS
@given(data=st.data())
def test_complex32_mul_div_pow_sum_against_complex64_math(
    guarded: None, data: st.DataObject
) -> None:
    """complex32 has almost no CPU kernels: compare with complex64 math rounded to complex32."""
    a = data.draw(tensors(torch.complex32, bound=100.0, min_size=1))
    b = data.draw(tensors(torch.complex32, bound=100.0, min_size=a.numel(), max_size=a.numel()))
    wa, wb = a.to(torch.complex64), b.to(torch.complex64)
    chalf = torch.complex32
    assert_parity(a * b, (wa * wb).to(chalf))
    assert_parity(a / b, (wa / wb).to(chalf))
    assert_parity(a * 2.5, (wa * 2.5).to(chalf))
    assert_parity(a**3, reference(lambda: (wa**3).to(chalf)))
    assert_parity(a.sum(), wa.sum().to(chalf))
    assert_parity(torch.sum(a, 0, keepdim=True), wa.sum(0, keepdim=True).to(chalf))


@SETTINGS
@given(data=st.data())
def test_nansum_complex(guarded: None, data: st.DataObject) -> None:
    """CPU nansum has no complex kernel: compare with the definition."""
    z = data.draw(tensors(torch.complex128, min_size=1))
    nan = z.real.isnan() | z.imag.isnan()
    want = torch.where(nan, torch.zeros_like(z), z).sum()
    assert_parity(torch.nansum(z), want)


# -- binary / ternary ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["logical_and", "logical_or", "logical_xor"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=_ids)
@SETTINGS
@given(data=st.data())
def test_logical(guarded: None, name: str, dtype: torch.dtype, data: st.DataObject) -> None:
    fn = getattr(torch, name)
    a = data.draw(tensors(dtype))
    b = data.draw(tensors(dtype, min_size=a.numel(), max_size=a.numel()))
    assert_parity(fn(a, b), reference(lambda: fn(a, b)))
    real = torch.ones(a.shape)  # mixed real/complex operands promote to complex
    assert_parity(fn(a, real), reference(lambda: fn(a, real)))
    # broadcasting: (n, 1) with (1, n)
    assert_parity(fn(a[:, None], b[None, :]), reference(lambda: fn(a[:, None], b[None, :])))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=_ids)
@SETTINGS
@given(data=st.data())
def test_lerp(guarded: None, dtype: torch.dtype, data: st.DataObject) -> None:
    """Magnitudes up to 2**50: complex products that overflow or have an infinite part give
    nan/inf patterns that depend on the order of the operations, and PyTorch's own kernels
    differ there (its CPU lerp gives -infj where its CPU mul-then-sub gives nan-infj)."""
    a = data.draw(tensors(dtype, bound=2.0**50, min_size=1))
    n = a.numel()
    b = data.draw(tensors(dtype, bound=2.0**50, min_size=n, max_size=n))
    w = data.draw(tensors(dtype, bound=2.0, min_size=n, max_size=n))
    scalar = data.draw(st.floats(-2, 2, width=32))
    # The formulas cancel (end - (end - start) * (1 - w)), so rounding (with or without a fused
    # multiply-add, which PyTorch's CPU loop uses) is bounded by eps * |inputs|, not by
    # eps * |result|: the absolute tolerance scales with the inputs.
    eps = torch.finfo(_real_dtype(dtype)).eps
    scale = max(float(a.abs().max()), float(b.abs().max()), 1.0)
    tolerance = {"rtol": 1.3e-6 if dtype == torch.complex64 else 1e-7, "atol": 8 * eps * scale}
    for fn in (
        lambda: torch.lerp(a, b, scalar),
        lambda: torch.lerp(a, b, w),
        lambda: torch.lerp(a[:, None], b[None, :], w[None, :]),
    ):
        assert_parity(fn(), reference(fn), **tolerance)
    inplace, want = a.clone(), reference(lambda: torch.lerp(a, b, 0.75))
    inplace.lerp_(b, 0.75)
    assert_parity(inplace, want, **tolerance)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=_ids)
@SETTINGS
@given(data=st.data())
def test_addcmul_addcdiv(guarded: None, dtype: torch.dtype, data: st.DataObject) -> None:
    """Magnitudes are bounded by 2**50 and divisors kept away from zero: PyTorch's CPU kernels
    compute (value * t1) * t2 and (value * t1) / t2, its CUDA kernels (which the rewrite
    follows) value * (t1 * t2) and value * (t1 / t2), so near the float limit one order
    overflows where the other does not; and its complex kernels disagree on x / 0 among
    themselves (addcdiv's CPU loop gives inf+infj where torch.div gives nan+nanj)."""
    a = data.draw(tensors(dtype, bound=2.0**50, min_size=1))
    n = a.numel()
    b = data.draw(tensors(dtype, bound=2.0**50, min_size=n, max_size=n))
    w = data.draw(tensors(dtype, bound=2.0, min_size=n, max_size=n))
    scalar = data.draw(st.floats(-2, 2, width=32))
    # The two orders round differently, and a + value*b*w may cancel: the tolerance is a few
    # rounding errors of the terms' magnitude, not of the (possibly much smaller) result.
    eps = torch.finfo(_real_dtype(dtype)).eps
    term = reference(lambda: (a.abs() + 12 * b.abs() * (1 + w.abs())).max().item())
    atol = 16 * eps * term + 1e-30
    for fn in (
        lambda: torch.addcmul(a, b, w, value=scalar),
        lambda: torch.addcdiv(a, b, w + 3, value=2),
        lambda: torch.addcmul(a[:, None], b[None, :], w[None, :]),
    ):
        assert_parity(
            fn(), reference(fn), atol=atol, rtol=1.3e-6 if dtype == torch.complex64 else 1e-7
        )
    inplace, want = a.clone(), reference(lambda: torch.addcmul(a, b, w, value=0.5))
    inplace.addcmul_(b, w, value=0.5)
    assert_parity(inplace, want, atol=atol, rtol=1.3e-6 if dtype == torch.complex64 else 1e-7)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=_ids)
@SETTINGS
@given(data=st.data())
def test_sigmoid_and_tanh_backward(guarded: None, dtype: torch.dtype, data: st.DataObject) -> None:
    grad = data.draw(tensors(dtype, bound=1e3))
    out = data.draw(tensors(dtype, bound=1e3, min_size=grad.numel(), max_size=grad.numel()))
    for op in (torch.ops.aten.sigmoid_backward, torch.ops.aten.tanh_backward):
        assert_parity(op(grad, out), reference(lambda op=op: op(grad, out)))


# -- reductions -----------------------------------------------------------------------------------

PROD_DTYPES = dtypes("prod")


@pytest.mark.parametrize("dtype", PROD_DTYPES, ids=_ids)
@SETTINGS
@given(data=st.data())
def test_prod(guarded: None, dtype: torch.dtype, data: st.DataObject) -> None:
    """Finite magnitudes are kept within 1e-3 <= |x| <= 2 (or exactly 0): a running product
    that overflows or underflows gives an order- and precision-dependent result (inf * 0 is
    nan, inf * 1e-76 is inf), and the rewrite accumulates in float64 where PyTorch uses the
    output type.  Complex inputs get no infinities, for the same reason (complex products
    with an infinite part give order-dependent nan/inf patterns).

    float16/bfloat16: PyTorch's CPU prod of a whole tensor accumulates in the 16-bit type,
    its CUDA kernel (like the rewrite) in float32; the reference is the float32 product
    rounded once, i.e. what the GPU computes."""
    if dtype.is_floating_point or dtype.is_complex:
        finite = reals(dtype, bound=2.0).filter(lambda v: abs(v) >= 1e-3)
        specials = [0.0, -0.0, math.nan] + ([] if dtype.is_complex else [math.inf, -math.inf])
        element = st.one_of(finite, finite, finite, st.sampled_from(specials))
    else:
        info = torch.iinfo(dtype)
        element = st.integers(max(info.min, -7), min(info.max, 7))
    rows = data.draw(st.integers(1, 3))
    cols = data.draw(st.integers(1, 4))
    count = rows * cols * (2 if dtype.is_complex else 1)
    values = data.draw(st.lists(element, min_size=count, max_size=count))
    t = torch.tensor(values, dtype=torch.float64 if not isinstance(values[0], int) else torch.int64)
    x = (torch.view_as_complex(t.reshape(-1, 2)) if dtype.is_complex else t).to(dtype)
    x = x.reshape(rows, cols)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}
    half = dtype in (torch.float16, torch.bfloat16)
    reductions: list[Callable[[torch.Tensor], torch.Tensor]] = [
        lambda t: t.prod(),
        lambda t: torch.prod(t, 0),
        lambda t: torch.prod(t, 1, keepdim=True),
        lambda t: t.t().prod(1),
    ]
    for reduce in reductions:
        if half:
            want = reference(lambda reduce=reduce: reduce(x.float())).to(dtype)
        else:
            want = reference(lambda reduce=reduce: reduce(x))
        assert_parity(reduce(x), want, **tolerance)
    if not dtype.is_complex:
        want = reference(lambda: torch.prod(x, 1, dtype=torch.float64))
        assert_parity(torch.prod(x, 1, dtype=torch.float64), want)
    want = reference(lambda: torch.prod(x, 0))
    out = torch.empty(7, dtype=want.dtype)
    assert _resizing(lambda: torch.prod(x, 0, out=out), resized=tuple(want.shape) != (7,)) is out
    assert_parity(out, want, **tolerance)


# -- real ops ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dtype"),
    [(n, d) for n in ("special_entr", "exp2", "sinc") for d in dtypes(n) if not d.is_complex],
    ids=_ids,
)
@SETTINGS
@given(data=st.data())
def test_real_rewrites(guarded: None, name: str, dtype: torch.dtype, data: st.DataObject) -> None:
    fn = getattr(torch.special, name.removeprefix("special_"))
    x = data.draw(tensors(dtype))
    assert_parity(fn(x), reference(lambda: fn(x)))


ROUND_TRIP = sorted(
    name
    for name in ENTRIES
    if name not in __import__("blackwell_compat.ops.rewrites").ops.rewrites.REWRITES
)


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_cpu_round_trip_ops_give_the_cpu_result(guarded: None, name: str) -> None:
    """Without an exact rewrite the guard computes with PyTorch's CPU kernel: same numbers."""
    for dtype in dtypes(name):
        forms = jit_samples.forms(name, dtype)
        assert forms
        for _form, fn in forms:
            assert_parity(fn(), reference(fn), rtol=0, atol=0)


# -- gradients ------------------------------------------------------------------------------------

GRAD_UNARY = [
    n
    for n in (
        "abs",
        "angle",
        "sgn",
        "exp",
        "sqrt",
        "rsqrt",
        "log",
        "log10",
        "log2",
        "sin",
        "cos",
        "sinh",
        "cosh",
        "atan",
        "atanh",
        "sigmoid",
        "tan",
        "tanh",
        "exp2",
        "sinc",
    )
    if n in ENTRIES
]


def _grad(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    leaf = x.detach().clone().requires_grad_()
    out = fn(leaf)
    weight = torch.linspace(0.5, 1.5, out.numel()).reshape(out.shape).to(out.dtype)
    loss = torch.view_as_real(out * weight).sum() if out.is_complex() else (out * weight).sum()
    (grad,) = torch.autograd.grad(loss, leaf)
    return grad


@pytest.mark.parametrize("name", GRAD_UNARY)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=_ids)
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_gradients(guarded: None, name: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """Away from poles and branch cuts, the guarded gradient equals the reference gradient."""
    fn = getattr(torch, name)
    n = data.draw(st.integers(1, 6))
    radius = st.floats(0.2, 1.8)
    phase = st.floats(0.3, 2.8)
    r = torch.tensor(data.draw(st.lists(radius, min_size=n, max_size=n)), dtype=torch.float64)
    p = torch.tensor(data.draw(st.lists(phase, min_size=n, max_size=n)), dtype=torch.float64)
    x = torch.polar(r, p).to(dtype)
    assert_parity(_grad(fn, x), reference(lambda: _grad(fn, x)))


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(lambda x: x.prod(), id="prod"),
        pytest.param(lambda x: torch.prod(x.reshape(2, -1), 1), id="prod dim"),
        pytest.param(lambda x: x**0.5, id="pow 0.5"),
        pytest.param(lambda x: torch.lerp(x, x * 2, 0.3), id="lerp"),
        pytest.param(lambda x: torch.addcmul(x, x, x, value=0.5), id="addcmul"),
        pytest.param(lambda x: torch.addcdiv(x, x, x + 2, value=0.5), id="addcdiv"),
        pytest.param(lambda x: x.abs().lgamma(), id="lgamma of abs"),
    ],
)
def test_gradients_of_other_ops(guarded: None, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    x = torch.polar(
        torch.linspace(0.4, 1.6, 6, dtype=torch.float64),
        torch.linspace(0.3, 2.5, 6, dtype=torch.float64),
    )
    assert_parity(_grad(fn, x), reference(lambda: _grad(fn, x)))


def test_real_special_function_gradients(guarded: None) -> None:
    x = torch.linspace(0.2, 0.8, 5, dtype=torch.float64)
    for fn in (torch.lgamma, torch.digamma, torch.erfc, torch.erfinv, torch.special.i0e):
        assert_parity(_grad(fn, x), reference(lambda fn=fn: _grad(fn, x)))


# -- out= and in-place calls whose tensors share memory --------------------------------------------
#
# PyTorch refuses an output that partially overlaps an input, or whose elements alias each other,
# before computing (``torch.exp2(x[1:4], out=x[0:3])``); the guard must refuse the same calls with
# the same error and compute the others as PyTorch does.  Every intercepted overload that writes
# (out=, in-place) is run on every dtype with each arrangement of tests/support/overlap_cases.py,
# once guarded and once with PyTorch's own CPU kernel.

WRITING_SPECS = [spec for spec in overload_specs() if spec.mutable]
REDUCTIONS = ("sum", "nansum", "prod")
OVERLAP_PARAMS = [
    pytest.param(spec, dtype, id=f"{spec.impl_name}-{_ids(dtype)}")
    for spec in WRITING_SPECS
    for dtype in sorted(spec.dtypes, key=str)
]


def _cpu_lacks(outcome: tuple[str, Any]) -> bool:
    """PyTorch's CPU has no kernel for the call (complex32, complex nansum); CUDA has one."""
    kind, value = outcome
    # NotImplementedError since torch 2.7, RuntimeError before
    return kind == "raised" and (
        "not implemented for 'ComplexHalf'" in value[1]
        or "does not support complex inputs" in value[1]  # nansum: "(on CPU) does not..."
    )


def _twins(spec: OverloadSpec, dtype: torch.dtype) -> list[tuple[OverloadSpec, torch.dtype]]:
    """Calls whose CPU outcome stands in where the CPU lacks a kernel: complex64 for complex32,
    ``sum`` for ``nansum`` (the sample values hold no NaN)."""
    specs = [spec]
    if spec.entry.name == "nansum":
        specs += [s for s in WRITING_SPECS if s.qualified == "aten::sum.IntList_out"]
    dtypes = [dtype] + ([torch.complex64] if dtype == torch.complex32 else [])
    return [(s, d) for s in specs for d in dtypes if (s, d) != (spec, dtype)]


def _assert_same_outcome(
    got: tuple[str, Any], want: tuple[str, Any], case: overlap_cases.Case, *, widen: bool = False
) -> None:
    """Same refusal (type and message), or same result, written-to tensor and inputs (dtype,
    shape, strides, values within the tolerances of this module's other tests).

    *widen*: *got* is complex32 and *want* the complex64 twin (the CPU has no complex32 kernel).
    """
    assert got[0] == want[0], (case.id, got, want)
    if got[0] == "raised":
        assert got[1] == want[1], case.id
        return
    (got_result, got_written, got_args), (want_result, want_written, want_args) = got[1], want[1]
    assert (got_result is got_written) == (want_result is want_written), case.id
    pairs = [(got_result, want_result)] + [
        (got_args[name], want_args[name])
        for name in want_args
        if isinstance(want_args[name], torch.Tensor)
    ]
    undefined = case.overload.split("::")[1].split(".")[0] in REDUCTIONS and case.arrangement in (
        "partial",
        "partial-after",
        "same-view",
        "internal",
    )
    for g, w in pairs:
        assert g.shape == w.shape and g.stride() == w.stride(), case.id
        g = g.cpu() if g.is_cuda else g  # the emulated device's memory, for the comparison
        if widen:
            assert g.dtype == {torch.complex64: torch.complex32}.get(w.dtype, g.dtype), case.id
        else:
            assert g.dtype == w.dtype, case.id
        if undefined:
            # PyTorch's reductions check no overlap: the kernel writes the output while it
            # still reads the input (or writes one location many times), so the values depend
            # on the kernel's order and differ between CPU and CUDA.  The guard computes the
            # reduction of the input as it was and writes it out.
            continue
        if widen:
            torch.testing.assert_close(g.to(w.dtype), w, rtol=2e-3, atol=2e-3, msg=case.id)
        else:
            assert_parity(g, w)


def _overlap_sweep(spec: OverloadSpec, dtype: torch.dtype, device: str) -> None:
    """Every arrangement of one overload and dtype, guarded on *device*, against the CPU."""
    with emulation.suspended():
        references = overlap_cases.cases(spec, dtype)
        twins = [
            {c.arrangement + c.role: c for c in overlap_cases.cases(*t)}
            for t in _twins(spec, dtype)
        ]
    cases = overlap_cases.cases(spec, dtype, device)
    assert cases and len(cases) == len(references)
    refused = 0
    for case, plain in zip(cases, references, strict=True):
        assert case.id == plain.id
        with emulation.suspended():
            want = overlap_cases.outcome(plain)
        got = overlap_cases.outcome(case)
        widen = False
        if _cpu_lacks(want) and got != want:
            # No CPU kernel to compare with, but the guard computes: the first twin call the
            # CPU can run decides refusal and values.
            for twin_cases in twins:
                twin = twin_cases[case.arrangement + case.role]
                with emulation.suspended():
                    want = overlap_cases.outcome(twin)
                if not _cpu_lacks(want):
                    widen = twin.dtype != case.dtype
                    break
            assert not _cpu_lacks(want), case.id
        refused += want[0] == "raised" and want[1][1].startswith("unsupported operation")
        _assert_same_outcome(got, want, case, widen=widen)
    # every elementwise overload refuses at least an output aliasing itself; reductions never
    assert bool(refused) == (spec.entry.name not in REDUCTIONS)


@pytest.mark.parametrize(("spec", "dtype"), OVERLAP_PARAMS)
def test_out_and_inplace_overlap_refused_or_computed_as_pytorch_does(
    guarded: None, spec: OverloadSpec, dtype: torch.dtype
) -> None:
    _overlap_sweep(spec, dtype, "cpu")


@pytest.fixture
def on_emulated_device() -> Iterator[None]:
    """The emulated CUDA device with the guard applied (per test: conftest resets the state)."""
    with bc.emulate("sm_121", device="cuda"), bc.patched(only="torch") as report:
        assert report.applied == ["torch"]
        yield


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "dtype"), OVERLAP_PARAMS)
def test_overlap_on_the_emulated_cuda_device_as_pytorch_does(
    on_emulated_device: None, spec: OverloadSpec, dtype: torch.dtype
) -> None:
    """The same sweep with every tensor on the emulated CUDA device (the guard sees its CPU
    memory): the same refusals and results as PyTorch's CPU kernel."""
    _overlap_sweep(spec, dtype, "cuda")


def test_overlap_refusal_of_the_issue_example(guarded: None) -> None:
    x = torch.arange(5, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="some elements of the input tensor and the written-to"):
        torch.exp2(x[1:4], out=x[0:3])
    assert torch.equal(x, torch.arange(5, dtype=torch.float32))  # nothing written
    z = torch.tensor([0.5 + 0.25j] * 5)
    with pytest.raises(RuntimeError, match="some elements of the input tensor and the written-to"):
        torch.exp(z[1:4], out=z[0:3])
    y = x.clone()
    assert torch.exp2(y, out=y) is y  # out= the input itself stays allowed
    assert torch.equal(y, reference(lambda: torch.exp2(x)))


def test_overlap_refusals_on_the_emulated_cuda_device() -> None:
    """On the emulated CUDA device the guard sees the device's CPU memory: same decisions."""
    with bc.emulate("sm_121", device="cuda"), bc.patched(only="torch") as report:
        assert "torch" in report.applied
        x = torch.linspace(0.1, 0.9, 5, device="cuda")
        z = x.to(torch.complex64) * (1 + 0.5j)
        assert x.is_cuda and z.is_cuda
        for call in (
            lambda: torch.exp2(x[1:4], out=x[0:3]),
            lambda: torch.exp(z[1:4], out=z[0:3]),
            lambda: z[0:3].mul_(z[1:4]),
            lambda: torch.sinc(x[0:3], out=x[1:4]),
        ):
            with pytest.raises(RuntimeError, match="some elements of the input tensor and the"):
                call()
        with pytest.raises(RuntimeError, match="more than one element of the written-to"):
            torch.exp(z[:3], out=torch.zeros(1, dtype=z.dtype, device="cuda").expand(3))
        before = z.cpu()
        assert torch.exp(z, out=z) is z  # exact overlap stays allowed
        torch.testing.assert_close(z.cpu(), reference(lambda: torch.exp(before)))
