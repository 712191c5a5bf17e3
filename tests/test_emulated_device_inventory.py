"""The Jiterator inventory on the emulated CUDA device: every op/dtype form fails on device
tensors as on the affected GPU, and with ``bc.apply()`` matches PyTorch's CPU result
(dtype, shape, strides, signs of zeros; values within the op guard's tolerance)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from support import jit_samples

import blackwell_compat as bc
from blackwell_compat import state
from blackwell_compat.emulated_device.tensor import EmulatedTensor
from blackwell_compat.ops import inventory

NVRTC_LINE = "nvrtc: error: invalid value for --gpu-architecture (-arch)"
ENTRIES = inventory.entries(torch.__version__)

warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")
warnings.filterwarnings("ignore", message=".*resized.*")


def _pairs() -> list[tuple[str, torch.dtype]]:
    return [(e.name, d) for e in ENTRIES for d in jit_samples.dtypes_of(e)]


@contextmanager
def _on_device() -> Iterator[None]:
    """New tensors go to the emulated device (torch.set_default_device, as user code does)."""
    torch.set_default_device("cuda")
    try:
        yield
    finally:
        torch.set_default_device(None)


def _host(value: Any) -> Any:
    if isinstance(value, EmulatedTensor):
        return value.cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_host(v) for v in value)
    return value


def _device_tensors(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return isinstance(value, EmulatedTensor) and value.is_cuda
    if isinstance(value, (list, tuple)):
        return all(_device_tensors(v) for v in value)
    return True


def _same(got: Any, expected: Any, where: str) -> None:
    if isinstance(expected, torch.Tensor):
        assert type(got) is torch.Tensor, where
        assert got.dtype == expected.dtype, where
        assert got.shape == expected.shape, where
        assert got.stride() == expected.stride(), where
        # The op guard's tolerance (docs/op-guard.md): assert_close's defaults for the dtype.
        if expected.dtype == torch.complex32:
            wide = (got.to(torch.complex64), expected.to(torch.complex64))
            torch.testing.assert_close(*wide, equal_nan=True, rtol=1e-3, atol=1e-5, msg=where)
        else:
            torch.testing.assert_close(got, expected, equal_nan=True, msg=where)
        if expected.dtype.is_floating_point:
            zeros = expected == 0
            assert torch.equal(torch.signbit(got[zeros]), torch.signbit(expected[zeros])), where
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for g, e in zip(got, expected, strict=True):
            _same(g, e, where)
    else:
        assert got == expected, where


@pytest.mark.slow
@pytest.mark.parametrize(("entry", "dtype"), _pairs(), ids=lambda v: str(v).replace("torch.", ""))
def test_inventory_fails_on_the_device_and_apply_matches_cpu(entry: str, dtype: torch.dtype):
    cpu_forms = jit_samples.forms(entry, dtype)
    if not cpu_forms:
        # PyTorch's CPU kernels reject this dtype (mostly complex32): nothing to compare, but
        # the emulated failure still comes first on the device, as it would on the GPU.
        with bc.emulate("sm_121", device="cuda"), _on_device():
            with state.suspended():
                _form, first = jit_samples.calls(entry, dtype)[0]
            with pytest.raises(RuntimeError, match="gpu-architecture"):
                first()
        return
    expected = [fn() for _form, fn in cpu_forms]
    with bc.emulate("sm_121", device="cuda"):
        with state.suspended(), _on_device():
            forms = jit_samples.forms(entry, dtype)
        assert [f for f, _ in forms] == [f for f, _ in cpu_forms]
        with _on_device():
            for form, fn in forms:
                with pytest.raises(RuntimeError) as info:
                    fn()
                assert NVRTC_LINE in str(info.value), form
            report = bc.apply(only="torch")
            assert report.applied == ["torch"], report
            try:
                for (form, fn), reference in zip(forms, expected, strict=True):
                    got = fn()
                    assert _device_tensors(got), form
                    _same(_host(got), reference, f"{entry} {dtype} {form}")
            finally:
                bc.revert()
        # CPU tensors never fail under device="cuda", even for the inventory.
        for (form, fn), reference in zip(cpu_forms, expected, strict=True):
            _same(fn(), reference, f"{entry} {dtype} {form} on the CPU")
