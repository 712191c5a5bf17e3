"""In-place function replacement: captured references see the patch, revert is exact."""

from __future__ import annotations

import functools
import inspect

import pytest

from blackwell_compat import inplace


def _target(x, scale=2, *, offset=0):
    """docstring kept"""
    return x * scale + offset


def test_swap_reaches_captured_references_and_restores_exactly():
    partial_ref = functools.partial(_target, scale=3)
    alias = _target
    code, defaults, kwdefaults = _target.__code__, _target.__defaults__, _target.__kwdefaults__
    calls = []

    def replacement(*args, **kwargs):
        calls.append((args, kwargs))
        return "patched"

    swap = inplace.swap_code(_target, replacement)
    try:
        assert _target(1) == "patched"
        assert partial_ref(5) == "patched"
        assert alias(2, offset=1) == "patched"
        assert calls[1] == ((5,), {"scale": 3})
        assert calls[2] == ((2,), {"offset": 1})
        # The original behaviour is still reachable, with its defaults.
        assert swap.original(1) == 2
        assert swap.original(1, 3, offset=1) == 4
        assert inplace.is_swapped(_target)
        # inspect follows __wrapped__ to the replacement's signature
        assert "args" in inspect.signature(_target).parameters
    finally:
        swap.restore()
    assert _target.__code__ is code
    assert _target.__defaults__ is defaults
    assert _target.__kwdefaults__ is kwdefaults
    assert not hasattr(_target, "__wrapped__")
    assert _target(1) == 2 and partial_ref(1) == 3
    assert _target.__doc__ == "docstring kept"
    swap.restore()  # idempotent


def test_double_swap_is_refused():
    swap = inplace.swap_code(_target, lambda *a, **k: None)
    try:
        with pytest.raises(inplace.InPlaceUnsupported, match="already"):
            inplace.swap_code(_target, lambda *a, **k: None)
    finally:
        swap.restore()


def test_closures_and_builtins_are_refused():
    y = 3

    def closure(x):
        return x + y

    with pytest.raises(inplace.InPlaceUnsupported, match="closure"):
        inplace.swap_code(closure, lambda *a: None)
    with pytest.raises(inplace.InPlaceUnsupported, match="plain Python function"):
        inplace.swap_code(len, lambda *a: None)  # type: ignore[arg-type]


def test_existing_wrapped_attribute_is_restored():
    def inner():
        return 1

    def outer():
        return 2

    outer.__wrapped__ = inner  # type: ignore[attr-defined]
    swap = inplace.swap_code(outer, lambda: 3)
    assert outer() == 3
    swap.restore()
    assert outer.__wrapped__ is inner  # type: ignore[attr-defined]
    assert outer() == 2


def _annotated(x: int, *, scale: float = 2.0) -> float:
    return x * scale


def test_original_copy_keeps_signature_and_annotations():
    expected = inspect.signature(_annotated)
    swap = inplace.swap_code(_annotated, lambda *a, **k: 0.0)
    try:
        assert inspect.signature(swap.original) == expected
        assert swap.original.__annotations__ == _annotated.__annotations__
        assert swap.original.__annotations__ is not _annotated.__annotations__
        assert swap.original(3) == 6.0
    finally:
        swap.restore()
