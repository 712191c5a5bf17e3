"""Emulation of user Jiterator kernels (``torch.cuda.jiterator._create_jit_fn``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat import emulation, state, user_kernels
from blackwell_compat.ops import dispatcher as dispatch

NVRTC_LINE = "nvrtc: error: invalid value for --gpu-architecture (-arch)"
CODE = "template <typename T> T my_axpy(T x, T y, T alpha) { return -x + alpha * y; }"
MULTI = (
    "template <typename T> void my_pair(T x, T y, T& out0, T& out1) { out0 = x + y; out1 = x - y; }"
)


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    yield
    state.reset_for_tests()


def _kernel() -> Any:
    return torch.cuda.jiterator._create_jit_fn(CODE, alpha=1.0)


def _original_outcome(fn: Any, *tensors: torch.Tensor) -> str:
    """What torch itself does with these tensors (outside emulation): its own message."""
    try:
        fn(*tensors)
    except Exception as exc:  # torch's own refusal: no CUDA device, or CPU tensors
        return f"{type(exc).__name__}: {exc}"
    return "ran"


def test_call_on_cpu_tensors_raises_the_gpu_error_naming_the_kernel() -> None:
    fn = _kernel()
    x, y = torch.randn(3), torch.randn(3)
    with bc.emulate("sm_121"):
        with pytest.raises(RuntimeError) as info:
            fn(x, y, alpha=2.0)
    text = str(info.value)
    assert text.startswith(NVRTC_LINE)
    assert "'my_axpy'" in text and "float32" in text
    assert "_create_jit_fn" in text and "fetch nvrtc" in text
    assert "no other rung serves it" in text


def test_kernel_created_inside_the_block_and_multi_output_kernels_raise() -> None:
    with bc.emulate("sm_120"):
        fn = _kernel()
        with pytest.raises(RuntimeError, match="my_axpy"):
            fn(torch.randn(2, dtype=torch.float64), torch.randn(2, dtype=torch.float64))
        pair = torch.cuda.jiterator._create_multi_output_jit_fn(MULTI, num_outputs=2)
        with pytest.raises(RuntimeError, match=r"(?s)gpu-architecture.*'my_pair'.*sm_120"):
            pair(torch.randn(2), torch.randn(2))


def test_outside_the_block_torch_answers_as_it_does() -> None:
    fn = _kernel()
    x = torch.randn(3)
    before = _original_outcome(fn, x, x)
    assert NVRTC_LINE not in before
    with bc.emulate("sm_121"):
        assert user_kernels.installed()
    assert not user_kernels.installed()
    assert _original_outcome(fn, x, x) == before


def test_remedy_serving_the_arch_and_a_suspended_thread_reach_the_original() -> None:
    fn = _kernel()
    x = torch.randn(3)
    original = _original_outcome(fn, x, x)
    with bc.emulate("sm_121"):
        with emulation.suspended():
            assert _original_outcome(fn, x, x) == original
        state.nvrtc_served_archs = frozenset({"sm_121"})
        assert _original_outcome(fn, x, x) == original


def test_the_op_guard_does_not_serve_it() -> None:
    fn = _kernel()
    with bc.emulate("sm_121"):
        bc.apply(only="torch")
        with pytest.raises(RuntimeError, match="my_axpy"):
            fn(torch.randn(3), torch.randn(3))


def test_audit_recorder_gets_the_call_then_it_raises() -> None:
    fn = _kernel()
    seen: list[Any] = []
    with bc.emulate("sm_121"):
        previous = dispatch.set_recorder(seen.append)
        try:
            with pytest.raises(RuntimeError, match="my_axpy"):
                fn(torch.randn(2, 3), torch.randn(2, 3))
            state.nvrtc_served_archs = frozenset({"sm_121"})
            _original_outcome(fn, torch.randn(2), torch.randn(2))
        finally:
            dispatch.set_recorder(previous)
    assert [r.mode for r in seen] == ["emulate", "remedy"]
    record = seen[0]
    assert record.op == user_kernels.USER_OP
    assert record.entry == "my_axpy" and record.kernel == "my_axpy"
    assert record.shapes == ((2, 3), (2, 3)) and record.dtype == "float32"
    assert record.source.startswith("user code: template <typename T> T my_axpy")


def test_the_ladder_says_only_the_nvrtc_remedy_serves_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from blackwell_compat import engine
    from blackwell_compat.cli.list_cmd import render_gpus
    from blackwell_compat.engine.reports import GpuService

    monkeypatch.setenv("BLACKWELL_COMPAT_NVRTC", "off")
    with bc.emulate("sm_121"):
        report = bc.apply(only=["torch"])
        (service,) = report.gpus
    assert service.rung == engine.RUNG_PATCHES
    assert service.user_kernels.startswith("NOT SERVED: only the NVRTC remedy serves them")
    data = service.as_dict()
    assert data["user_kernels"] == service.user_kernels
    assert (
        "    user Jiterator kernels (_create_jit_fn): NOT SERVED: only the NVRTC remedy"
        in render_gpus([data])
    )
    remedied = GpuService("GPU 0 GB10 (sm_121)", "sm_121", engine.RUNG_NVRTC_REMEDY, "served")
    assert remedied.user_kernels == "served by the NVRTC remedy"
    fine = GpuService("GPU 0 H100 (sm_90)", "sm_90", engine.RUNG_NOT_AFFECTED, "listed")
    assert fine.user_kernels.startswith("compiled by torch's own NVRTC")
