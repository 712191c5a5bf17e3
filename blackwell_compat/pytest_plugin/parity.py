"""``assert_cpu_parity``'s machinery: run on the device under test with the patches and on the
CPU reference, compare, and describe the worst element.

Imported on first use of the fixture; torch is imported inside the functions (a test suite
that never compares pays nothing for it).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from .. import emulation, engine
from ..toolkit.roundtrip import map_tensors
from .settings import DEFAULT_ARCH
from .state import State

# torch.testing.assert_close's documented default (rtol, atol) per dtype; other dtypes: exact.
_DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "torch.float16": (1e-3, 1e-5),
    "torch.bfloat16": (1.6e-2, 1e-5),
    "torch.float32": (1.3e-6, 1e-5),
    "torch.float64": (1e-7, 1e-7),
    "torch.complex32": (1e-3, 1e-5),
    "torch.complex64": (1.3e-6, 1e-5),
    "torch.complex128": (1e-7, 1e-7),
}


def _copier(device: Any) -> Callable[[Any], Any]:
    def copy(tensor: Any) -> Any:
        moved = tensor.detach().to(device, copy=True)
        return moved.requires_grad_(tensor.requires_grad) if tensor.requires_grad else moved

    return copy


def _to_cpu(tensor: Any) -> Any:
    return tensor.detach().cpu()


def _fn_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _active_patch_names() -> list[str]:
    return [s.name for s in engine.status() if s.state in ("applied", "pending-import")]


def parity(
    state: State,
    fn: Callable[..., Any],
    inputs: tuple[Any, ...],
    rtol: float | None,
    atol: float | None,
) -> Any:
    __tracebackhide__ = True
    if not callable(fn):
        raise TypeError(f"assert_cpu_parity: fn must be callable, got {fn!r}")
    if (rtol is None) != (atol is None):
        raise ValueError(
            "assert_cpu_parity: give both rtol and atol, or neither (per-dtype defaults)"
        )
    import torch

    # 1. The CPU reference: original kernels, emulation suspended (in this thread).
    with emulation.suspended():
        expected = map_tensors(fn(*map_tensors(inputs, _copier("cpu"))), _to_cpu)

    # 2. The device under test, with the patches.
    with ExitStack() as stack:
        if torch.cuda.is_available():
            device: Any = torch.device("cuda", torch.cuda.current_device())
            where = f"{device} ({torch.cuda.get_device_name(device)})"
        else:
            device = torch.device("cpu")
            if not emulation.is_active():
                stack.enter_context(emulation.emulate(DEFAULT_ARCH))
            where = f"cpu emulating {emulation.current_arch()}"
        names = _active_patch_names()
        if not names:
            stack.enter_context(engine.patched(force=True))
            names = _active_patch_names()
        where += f", patches: {', '.join(names) or 'none'}"
        actual = map_tensors(fn(*map_tensors(inputs, _copier(device))), _to_cpu)

    # 3. Compare without emulation (comparing complex values takes complex abs).
    with emulation.suspended():
        _compare(actual, expected, rtol, atol, f"{_fn_name(fn)} on {where}")
    return actual


def _flatten(obj: Any, path: str = "") -> list[tuple[str, Any]]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [(path or "result", obj)]
    if isinstance(obj, (list, tuple)):
        return [pair for i, v in enumerate(obj) for pair in _flatten(v, f"{path}[{i}]")]
    if isinstance(obj, dict):
        return [pair for k, v in obj.items() for pair in _flatten(v, f"{path}[{k!r}]")]
    return []


def _compare(
    actual: Any, expected: Any, rtol: float | None, atol: float | None, where: str
) -> None:
    __tracebackhide__ = True
    import torch

    try:
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError as exc:
        lines = [f"assert_cpu_parity: {where} differs from the CPU reference"]
        expected_parts = dict(_flatten(expected))
        for path, tensor in _flatten(actual):
            ref = expected_parts.get(path)
            if ref is None:
                continue
            detail = worst_element(tensor, ref, rtol, atol)
            if detail:
                lines.append(f"{path}: {detail}")
        lines.append(str(exc))
        raise AssertionError("\n".join(lines)) from None


def _tolerances(dtype: Any, rtol: float | None, atol: float | None) -> tuple[float, float]:
    if rtol is not None and atol is not None:
        return rtol, atol
    return _DEFAULT_TOLERANCES.get(str(dtype), (0.0, 0.0))


def worst_element(
    actual: Any, expected: Any, rtol: float | None = None, atol: float | None = None
) -> str:
    """Describe the element of *actual* farthest outside the tolerance around *expected*.

    Empty when the tensors agree, or when their shapes or dtypes differ (``assert_close``
    reports those).
    """
    import torch

    if actual.shape != expected.shape or actual.dtype != expected.dtype or actual.numel() == 0:
        return ""
    r, a = _tolerances(actual.dtype, rtol, atol)
    wide = torch.complex128 if actual.dtype.is_complex else torch.float64
    act = actual.detach().cpu().to(wide).reshape(-1)
    exp = expected.detach().cpu().to(wide).reshape(-1)
    if wide == torch.complex128:
        diff = torch.hypot((act - exp).real, (act - exp).imag)
        magnitude = torch.hypot(exp.real, exp.imag)
        act_nan, exp_nan = act.real.isnan() | act.imag.isnan(), exp.real.isnan() | exp.imag.isnan()
    else:
        diff = (act - exp).abs()
        magnitude = exp.abs()
        act_nan, exp_nan = act.isnan(), exp.isnan()
    allowed = a + r * magnitude
    excess = diff - allowed
    same = (act == exp) | (act_nan & exp_nan)  # equal infinities give nan differences
    excess = torch.where(same, torch.full_like(excess, -1.0), excess)
    excess = torch.where(act_nan != exp_nan, torch.full_like(excess, float("inf")), excess)
    excess = torch.nan_to_num(excess, nan=float("inf"), posinf=float("inf"))
    bad = excess > 0
    count = int(bad.sum())
    if count == 0:
        return ""
    flat = int(torch.argmax(excess))
    index = _unravel(flat, tuple(actual.shape))
    got = _format_value(actual.reshape(-1)[flat].item())
    want = _format_value(expected.reshape(-1)[flat].item())
    abs_diff = float(diff[flat])
    mag = float(magnitude[flat])
    rel = abs_diff / mag if mag else float("inf")
    return (
        f"{count} of {actual.numel()} elements differ; worst at index {index}: device "
        f"{got}, reference {want}, |difference| {abs_diff:.6g} (relative {rel:.6g}), "
        f"allowed {float(allowed[flat]):.6g} (rtol {r:g}, atol {a:g}, dtype "
        f"{str(actual.dtype).replace('torch.', '')})"
    )


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, float):
        return f"{value:.8g}"
    if isinstance(value, complex):
        return f"({value.real:.8g}{value.imag:+.8g}j)"
    return repr(value)


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return tuple(reversed(index))
