"""PyTorch's exact call semantics through the dispatcher kernel: dtypes, shapes, strides, signs.

Every intercepted overload is called the way user code calls it (functions, operators, reflected
operators, ``out=`` of any dtype, in-place methods) with operands drawn from 0-dim, 1-D, empty,
strided and broadcast tensors of every dtype and Python numbers of every kind (bool, int, float,
complex, with inf, nan, -0.0, subnormals and near-limit magnitudes).  Each batch of calls is
first computed with nothing of this package registered (the reference), then again with the op
guard applied under emulation, which intercepts every one of these calls: the pass-through path
for dtypes the Jiterator never compiles, the rewrites for those it does.

A call that PyTorch refuses must still be refused; one it accepts must give the same dtype,
shape, strides and values.  Calls that reach the original kernel must be bit-identical (signed
zeros and NaNs included); calls computed by a rewrite are held to the tolerances of
``tests/test_torch_guard_parity.py`` and to the sign of every zero.
"""

from __future__ import annotations

import cmath
import math
import operator
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import test_torch_guard_parity as parity
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import blackwell_compat as bc
from blackwell_compat import state
from blackwell_compat.ops import discovery, inventory, rewrites

warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")

ENTRIES = inventory.by_name(torch.__version__)

ALL_DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex32,
    torch.complex64,
    torch.complex128,
]
FLOAT_SPECIALS = [
    0.0,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    5e-324,
    -2.2250738585072014e-308,
    1e-40,
    1.7976931348623157e308,
    -3.0e38,
    65504.0,
    0.1,
    -0.5,
    2.5,
    1.0,
    -7.0,
]
INT_SPECIALS = [0, 1, -1, 2, 3, -7, 127, 255, 2**31 - 1, -(2**31), 2**40]


CPU_LACKS_KERNEL = re.compile(r"not implemented for|does not support|Could not run")


def _guard_applied() -> Any:
    class _Applied:
        def __enter__(self) -> None:
            self._emulation = bc.emulate("sm_121")
            self._emulation.__enter__()
            report = bc.apply(only="torch")
            assert report.applied == ["torch"], report

        def __exit__(self, *exc: object) -> None:
            bc.revert()
            self._emulation.__exit__(None, None, None)
            state.reset_for_tests()

    return _Applied()


# -- operands ------------------------------------------------------------------------------------


def _python_numbers() -> st.SearchStrategy[Any]:
    floats = st.one_of(st.sampled_from(FLOAT_SPECIALS), st.floats(-1e6, 1e6, width=64))
    return st.one_of(
        st.booleans(),
        st.sampled_from(INT_SPECIALS),
        st.integers(-1000, 1000),
        floats,
        st.builds(complex, floats, floats),
    )


@st.composite
def tensors(draw: st.DrawFn, dtype: torch.dtype | None = None) -> torch.Tensor:
    """0-dim, 1-D (empty too), a transposed 2-D view or an expanded (broadcast) view."""
    if dtype is None:
        dtype = draw(st.sampled_from(ALL_DTYPES))
    layout = draw(st.sampled_from(["0-dim", "0-dim", "1-d", "empty", "strided", "expanded"]))
    n = {"0-dim": 1, "1-d": 3, "empty": 0, "strided": 6, "expanded": 3}[layout]
    if dtype == torch.bool:
        values = torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    elif not (dtype.is_floating_point or dtype.is_complex):
        info = torch.iinfo(dtype)
        ints = st.integers(max(info.min, -1000), min(info.max, 1000))
        values = torch.tensor(draw(st.lists(ints, min_size=n, max_size=n)), dtype=torch.int64)
    else:
        floats = st.one_of(st.sampled_from(FLOAT_SPECIALS), st.floats(-100, 100, width=32))
        re = torch.tensor(draw(st.lists(floats, min_size=n, max_size=n)), dtype=torch.float64)
        if dtype.is_complex:
            im = torch.tensor(draw(st.lists(floats, min_size=n, max_size=n)), dtype=torch.float64)
            values = torch.complex(re, im)
        else:
            values = re
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow on casting near-limit values is fine here
        values = values.to(dtype)
    if layout == "0-dim":
        return values.reshape(())
    if layout == "strided":
        return values.reshape(2, 3).t()
    if layout == "expanded":
        return values.reshape(1, 3).expand(2, 3)
    return values


def operands() -> st.SearchStrategy[Any]:
    return st.one_of(tensors(), tensors(), _python_numbers())


# -- calls ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Form:
    """One way of calling an op: ``fn(*operands)``; ``out``/``inplace`` say what it writes."""

    entry: str
    name: str
    fn: Callable[..., Any]
    arity: int
    out: bool = False
    inplace: bool = False


def _torch_fn(path: str) -> Callable[..., Any] | None:
    target: Any = torch
    for part in path.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target  # type: ignore[no-any-return]


def _forms() -> list[Form]:
    forms: list[Form] = []

    def add(entry: str, name: str, fn: Callable[..., Any], arity: int, **kind: bool) -> None:
        if entry in ENTRIES:
            forms.append(Form(entry, name, fn, arity, **kind))

    unary = [
        "abs", "angle", "sgn", "neg", "exp", "sqrt", "rsqrt", "log", "log10", "log2", "sin",
        "cos", "sinh", "cosh", "tan", "tanh", "atan", "atanh", "sigmoid", "exp2", "sinc",
        "lgamma", "digamma", "erfc", "erfinv", "i0", "conj_physical",
    ]  # fmt: skip
    for name in unary:
        fn = _torch_fn(name)
        if fn is None:
            continue
        add(name, name, fn, 1)
        add(name, f"{name}(out=)", lambda x, out, _f=fn: _f(x, out=out), 1, out=True)
        method = f"{name}_"
        if hasattr(torch.Tensor, method):
            add(name, f"Tensor.{method}", lambda x, _m=method: getattr(x, _m)(), 1, inplace=True)

    binary: dict[str, list[tuple[str, Callable[..., Any]]]] = {
        "mul": [("mul", torch.mul), ("*", operator.mul)],
        "div": [
            ("div", torch.div),
            ("/", operator.truediv),
            ("div(floor)", lambda a, b: torch.div(a, b, rounding_mode="floor")),
        ],
        "pow": [("pow", torch.pow), ("**", operator.pow)],
        "logaddexp": [("logaddexp", torch.logaddexp)],
        "logical_and": [("logical_and", torch.logical_and)],
        "logical_xor": [("logical_xor", torch.logical_xor)],
        "gcd": [("gcd", torch.gcd)],
        "special_zeta": [("special.zeta", torch.special.zeta)],
        "special_chebyshev_polynomial_t": [
            ("special.chebyshev_polynomial_t", torch.special.chebyshev_polynomial_t)
        ],
        "special_hermite_polynomial_h": [
            ("special.hermite_polynomial_h", torch.special.hermite_polynomial_h)
        ],
    }
    for entry, calls in binary.items():
        for name, fn in calls:
            add(entry, name, fn, 2)
            add(entry, f"reflected {name}", lambda a, b, _f=fn: _f(b, a), 2)
        first = calls[0][1]
        add(
            entry,
            f"{calls[0][0]}(out=)",
            lambda a, b, out, _f=first: _f(a, b, out=out),
            2,
            out=True,
        )
        method = f"{calls[0][0].split('.')[-1]}_"
        if hasattr(torch.Tensor, method):
            add(
                entry,
                f"Tensor.{method}",
                lambda a, b, _m=method: getattr(a, _m)(b),
                2,
                inplace=True,
            )
    add("lerp", "lerp", torch.lerp, 3)
    add("lerp", "Tensor.lerp_", lambda a, b, w: a.lerp_(b, w), 3, inplace=True)
    add("addcmul", "addcmul", lambda a, b, c: torch.addcmul(a, b, c, value=0.5), 3)
    add("addcdiv", "addcdiv", lambda a, b, c: torch.addcdiv(a, b, c, value=-2), 3)
    for entry in ("sum", "nansum", "prod"):
        fn = getattr(torch, entry)
        add(entry, entry, fn, 1)
        add(entry, f"{entry}(dim=0)", lambda x, _f=fn: _f(x, 0) if x.dim() else _f(x), 1)
        add(entry, f"{entry}(dtype=c64)", lambda x, _f=fn: _f(x, dtype=torch.complex64), 1)
    return forms


FORMS = _forms()


@dataclass
class Outcome:
    """What a call returned (or raised), captured so it can be compared later."""

    error: type[BaseException] | None
    value: Any
    written: Any = None
    message: str = ""


def _snapshot(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        # clone keeps dtype and values; strides and shape are recorded separately
        return (value.dtype, tuple(value.shape), value.stride(), value.clone())
    return value


def _run(form: Form, args: list[Any], out_dtype: torch.dtype | None) -> Outcome:
    call_args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if form.out:
                out = torch.empty(0, dtype=out_dtype or torch.float32)
                returned = form.fn(*call_args, out)
                return Outcome(None, returned is out, _snapshot(out))
            result = form.fn(*call_args)
            if form.inplace:
                return Outcome(None, result is call_args[0], _snapshot(call_args[0]))
            return Outcome(None, _snapshot(result))
        except Exception as exc:
            return Outcome(type(exc), None, message=str(exc))


def _bits_equal(got: torch.Tensor, want: torch.Tensor) -> bool:
    if want.is_complex():
        wide = torch.complex128 if want.dtype != torch.complex32 else torch.complex64
        return _bits_equal(torch.view_as_real(got.to(wide)), torch.view_as_real(want.to(wide)))
    if not want.is_floating_point():
        return bool(torch.equal(got, want))
    g, w = got.to(torch.float64), want.to(torch.float64)
    same = (g == w) & (torch.signbit(g) == torch.signbit(w))
    same |= g.isnan() & w.isnan()
    return bool(same.all())


def _finite(args: list[Any], dtype: torch.dtype) -> bool:
    """No inf or nan among the operands, and no number beyond *dtype*'s range.

    PyTorch's CPU kernels round such a number to the result dtype (complex32: inf) before they
    compute, its CUDA kernels read it at float precision: the guard stands for the latter.
    """
    limit = torch.finfo(dtype).max if (dtype.is_floating_point or dtype.is_complex) else math.inf
    for a in args:
        if isinstance(a, complex) and max(abs(a.real), abs(a.imag)) > limit:
            return False
        if isinstance(a, (int, float)) and abs(a) > limit:
            return False
        if isinstance(a, torch.Tensor):
            wide = a.to(torch.complex128) if a.is_complex() else a.to(torch.float64)
            if not bool(torch.isfinite(wide).all()):
                return False
        elif isinstance(a, (float, complex)) and not cmath.isfinite(a):
            return False
    return True


def _product_overflows(x: torch.Tensor, dtype: torch.dtype) -> bool:
    if not (dtype.is_floating_point or dtype.is_complex):
        return False
    magnitudes = x.abs().to(torch.float64) if x.is_complex() else x.to(torch.float64).abs()
    large = magnitudes[magnitudes > 1]  # a partial product of these may overflow in any order
    return bool(large.log().sum() > math.log(torch.finfo(dtype).max) - 1)


def _moderate(args: list[Any]) -> bool:
    """Complex operands with both parts zero or normal and at most 50 in magnitude: the only
    ones compared where PyTorch's CPU complex kernels do not give C99 special values (torch
    2.6: exp(89+0j) is inf+nanj there); see test_torch_guard_parity._cpu_follows_c99."""
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_complex():
            parts = torch.view_as_real(a.to(torch.complex128)).abs()
            tiny = torch.finfo(parts.dtype).tiny
            if bool(((parts > 50) | ((parts != 0) & (parts < tiny))).any()):
                return False
    return True


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Rewritten results: the parity suite's tolerances, NaN as a whole complex value, signs."""
    if want.dtype == torch.complex32:
        got, want = got.to(torch.complex64), want.to(torch.complex64)
        tolerance = {"rtol": 1e-3, "atol": 1e-5}
    else:
        tolerance = {}
    if want.is_complex():
        nan = want.real.isnan() | want.imag.isnan()
        assert torch.equal(nan, got.real.isnan() | got.imag.isnan()), "NaN positions"
        got, want = torch.view_as_real(got[~nan]), torch.view_as_real(want[~nan])
        torch.testing.assert_close(got, want, **tolerance)
        return
    torch.testing.assert_close(got, want, equal_nan=True, **tolerance)
    zero = want == 0
    assert torch.equal(torch.signbit(got[zero]), torch.signbit(want[zero])), "sign of zero"


def _rewritten(form: Form, dtype: torch.dtype) -> bool:
    """Whether the guard computes such a result with a rewrite (not the original kernel)."""
    return form.entry in rewrites.REWRITES and dtype in discovery.torch_dtypes(
        ENTRIES[form.entry].dtypes
    )


def _compare(form: Form, args: list[Any], got: Outcome, want: Outcome) -> None:
    where = f"{form.name}{tuple(_describe(a) for a in args)}"
    if want.error is not None and got.error is None and CPU_LACKS_KERNEL.search(want.message):
        # The CPU has no kernel for this dtype (complex32 angle, complex nansum) but the GPU
        # has a jitted one, which the guard stands in for: only such results may exist where
        # the CPU has none.
        result = got.written if form.out or form.inplace else got.value
        assert isinstance(result, tuple), where
        computed = (_input_dtype(args), result[0], _common_dtype(args))
        assert any(_rewritten(form, dtype) for dtype in computed), where
        return
    assert got.error == want.error, f"{where}: raised {got.error}, PyTorch {want.error}"
    if want.error is not None:
        return
    for got_value, want_value in ((got.value, want.value), (got.written, want.written)):
        if not isinstance(want_value, tuple):
            assert got_value == want_value, where
            continue
        dtype, shape, stride, tensor = want_value
        g_dtype, g_shape, g_stride, g_tensor = got_value
        assert (g_dtype, g_shape) == (dtype, shape), (
            f"{where}: {g_dtype}{g_shape} vs {dtype}{shape}"
        )
        assert g_stride == stride, f"{where}: strides {g_stride} vs {stride}"
        if _rewritten(form, _input_dtype(args)) or _rewritten(form, dtype):
            # Rewrites are exact in layout; their values are held to the parity suite's
            # tolerances on finite inputs (test_torch_guard_parity.py covers the specials,
            # with the references it documents).
            # sgn: PyTorch's CPU kernel squares the parts and underflows to NaN for tiny |z|;
            # half-type prod: its CPU kernel accumulates in 16 bits, the CUDA one (which the
            # guard stands for) in float32.  The parity suite compares both with what the GPU
            # computes instead.
            # prod whose partial products can overflow: inf * 0 (nan) or a finite 0 depends on
            # the order of the reduction, which PyTorch's CPU and CUDA kernels differ in.
            half_prod = form.entry == "prod" and dtype in (torch.float16, torch.bfloat16)
            overflowing = form.entry == "prod" and _product_overflows(args[0], dtype)
            comparable = _finite(args, dtype) and (parity.C99 or _moderate(args))
            if comparable and form.entry != "sgn" and not half_prod and not overflowing:
                _close(g_tensor, tensor)
        else:
            assert _bits_equal(g_tensor, tensor), f"{where}: {g_tensor} vs {tensor}"


def _common_dtype(args: list[Any]) -> torch.dtype:
    """The dtype the operands promote to (what selects the kernel of an ``out=`` call)."""
    try:
        return torch.result_type(args[0], args[1]) if len(args) > 1 else _input_dtype(args)
    except (RuntimeError, TypeError):
        return _input_dtype(args)


def _input_dtype(args: list[Any]) -> torch.dtype:
    return args[0].dtype if isinstance(args[0], torch.Tensor) else torch.float32


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype)[6:]}{list(value.shape)}"
    return repr(value)


# -- the tests -----------------------------------------------------------------------------------


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[Form, list[Any], torch.dtype]]:
    batch = []
    for _ in range(draw(st.integers(8, 24))):
        form = draw(st.sampled_from(FORMS))
        args = [draw(tensors())] + [draw(operands()) for _ in range(form.arity - 1)]
        batch.append((form, args, draw(st.sampled_from(ALL_DTYPES))))
    return batch


def _check_batch(batch: list[tuple[Form, list[Any], torch.dtype]]) -> None:
    want = [_run(form, args, out_dtype) for form, args, out_dtype in batch]
    with _guard_applied():
        got = [_run(form, args, out_dtype) for form, args, out_dtype in batch]
    for (form, args, out_dtype), g, w in zip(batch, got, want, strict=True):
        try:
            _compare(form, args, g, w)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n  call: {form.name} {args!r} out={out_dtype}") from None


@pytest.mark.slow
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=batches())
def test_every_form_matches_pytorch(batch: list[tuple[Form, list[Any], torch.dtype]]) -> None:
    _check_batch(batch)


def _case(name: str, *args: Any, out_dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
    forms = [f for f in FORMS if f.name == name]
    assert forms, f"no form {name!r} on torch {torch.__version__}"
    return (forms[0], list(args), out_dtype)


# Each of these failed before: a 0-dim tensor with a Python number was promoted as if the
# number were a 0-dim float64/int64 tensor; complex 0-dim rewrites returned complex128;
# a cached -0.0 came back as 0.0; abs/angle wrote complex magnitudes into an integer out=.
REGRESSIONS = [
    _case("*", torch.tensor(0.5), 2.5),
    _case("/", torch.tensor(0.5), 20.0),
    _case("*", torch.tensor(0.5, dtype=torch.float16), 0.1),
    _case("*", torch.tensor(3, dtype=torch.int32), 3),
    _case("reflected *", torch.tensor(3, dtype=torch.int8), 2.5),
    _case("*", torch.tensor(True), 3),
    _case("*", torch.tensor(0.25, dtype=torch.float16), 1j),
    _case("Tensor.mul_", torch.tensor(0.5, dtype=torch.bfloat16), 0.3),
    _case("mul(out=)", torch.tensor(0.5), 0.1, out_dtype=torch.float64),
    _case("mul(out=)", torch.tensor(2 + 1j), 0.5, out_dtype=torch.float32),
    _case("pow", torch.tensor(1.5), 2),
    _case("log10", torch.tensor(0.2608 + 3.6171j)),
    _case("exp2", torch.tensor(0.2608 + 3.6171j)),
    _case("log2", torch.tensor(0.2608 + 3.6171j)),
    _case("rsqrt", torch.tensor(0.2608 + 3.6171j)),
    _case("sinc", torch.tensor(0.2608 + 3.6171j)),
    _case("*", torch.tensor([1 + 2j], dtype=torch.complex32), 0.0),
    _case("*", torch.tensor([1 + 2j], dtype=torch.complex32), -0.0),
    _case("*", torch.tensor([1.0, -2.0]), -0.0),
    _case("abs(out=)", torch.tensor([1 + 1j]), out_dtype=torch.int64),
    _case("angle(out=)", torch.tensor([1 + 1j], dtype=torch.complex128), out_dtype=torch.int64),
    _case("sum", torch.tensor(0.5)),
    _case("sgn(out=)", torch.tensor(0j), out_dtype=torch.complex32),
    _case("neg(out=)", torch.tensor([1 + 1j]), out_dtype=torch.complex128),
    _case("Tensor.logical_and_", torch.tensor(0j), torch.tensor([False, True, False])),
    _case("lerp", torch.tensor(0j, dtype=torch.complex32), torch.tensor(0, dtype=torch.uint8), 0.5),
    _case("*", torch.tensor([1 + 2j], dtype=torch.complex32), 2.5),
    _case("*", torch.tensor([0.5, 2.0], dtype=torch.float16), 1j),
]


@pytest.mark.parametrize(
    "case", REGRESSIONS, ids=[f"{c[0].name}-{'-'.join(map(_describe, c[1]))}" for c in REGRESSIONS]
)
def test_regression(case: tuple[Form, list[Any], torch.dtype], registration: str) -> None:
    _check_batch([case])


def test_the_number_cache_keeps_the_sign_of_zero() -> None:
    x = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex32)
    with _guard_applied():
        first = torch.view_as_real((x * 0.0).to(torch.complex64))
        second = torch.view_as_real((x * -0.0).to(torch.complex64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = torch.view_as_real((x * -0.0).to(torch.complex64))
    assert _bits_equal(second, want), (second, want)
    assert not torch.signbit(first).all()


def test_the_pass_through_keeps_the_double_scalar_of_half_math() -> None:
    # 0.1 rounded to half (0.0999755859375) would change these products; PyTorch's kernels
    # use the double scalar (as float), which the guard must keep.
    x = torch.tensor([2049.0, 1.0, 3.0], dtype=torch.float16)
    want = [x * 0.1, torch.tensor(2049.0, dtype=torch.float16) * 0.1]
    with _guard_applied():
        got = [x * 0.1, torch.tensor(2049.0, dtype=torch.float16) * 0.1]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype == torch.float16
        assert _bits_equal(g, w)
