"""Fused kernels on the emulated CUDA device (issues 20 and 23): a scripted function called with
device tensors fails where the GPU's fuser compiles; CPU tensors never fail; the fuser rung and
the NVRTC remedy serve it; no call lets NNC compile for the GPU that is not there."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from support.fuser_switches import set_switches as _set_switches
from support.fuser_switches import switches as _switches

import blackwell_compat as bc
from blackwell_compat import state

NVRTC_LINE = "nvrtc: error: invalid value for --gpu-architecture (-arch)"
C: Any = torch._C


@pytest.fixture(autouse=True)
def _fuser_switches() -> Iterator[None]:
    before = _switches()
    yield
    bc.revert()
    state.reset_for_tests()
    _set_switches(before)


def _eager_gate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    t = a + b
    return torch.tanh(t) * torch.sigmoid(t)


def _gate() -> Any:
    """A fresh scripted gate (plans are per function: each test its own)."""
    return torch.jit.script(_eager_gate)


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(4, 33, generator=gen)
    b = torch.randn(4, 33, generator=gen)
    a[0, :6] = torch.tensor([-0.0, 0.0, float("inf"), -float("inf"), float("nan"), 1e-40])
    return a, b[:, :].t().contiguous().t()  # a column-major second operand


def _same(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape and got.stride() == want.stride()
    numbers = ~torch.isnan(want)  # the sign of a NaN carries no meaning (kernels differ there)
    assert torch.equal(torch.signbit(got)[numbers], torch.signbit(want)[numbers])
    assert torch.allclose(got, want, rtol=0, atol=0, equal_nan=True)


def test_device_tensors_fail_where_the_fuser_compiles_cpu_tensors_never() -> None:
    gate = _gate()
    a, b = _inputs()
    with bc.emulate("sm_121", device="cuda"):
        x, y = a.to("cuda"), b.to("cuda")
        first = gate(x, y)  # the profiling run: op by op, as on the GPU
        assert first.device.type == "cuda"
        for _ in range(2):
            with pytest.raises(RuntimeError) as info:
                gate(x, y)
            message = str(info.value)
            assert message.startswith(NVRTC_LINE)
            assert "nvrtc compilation failed:" in message
            assert "fused_add_tanh_sigmoid_mul" in message
        for _ in range(4):  # CPU tensors in the same process: never a GPU call
            _same(gate(a, b), _eager_gate(a, b))
    _same(first.cpu() if first.device.type == "cuda" else first, _eager_gate(a, b))


def test_the_fuser_rung_serves_the_emulated_device_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLACKWELL_COMPAT_NVRTC", "off")
    gate = _gate()
    a, b = _inputs()
    with bc.emulate("sm_121", device="cuda"):
        report = bc.apply()
        assert "fuser" in report.applied, report
        x, y = a.to("cuda"), b.to("cuda")
        results = [gate(x, y) for _ in range(4)]
    want = _eager_gate(a, b)
    for got in results:
        assert got.device.type == "cuda"
        _same(got.cpu(), want)


def test_the_nvrtc_remedy_serving_the_arch_keeps_fusion_and_never_raises() -> None:
    gate = _gate()
    a, b = _inputs()
    with bc.emulate("sm_121", device="cuda"):
        state.nvrtc_served_archs = frozenset({"sm_121"})  # as the NVRTC remedy sets it
        x, y = a.to("cuda"), b.to("cuda")
        results = [gate(x, y) for _ in range(4)]
    assert C._jit_can_fuse_on_gpu()  # the user's switch, untouched
    for got in results:
        _same(got.cpu(), _eager_gate(a, b))


def test_switches_are_the_users_after_device_calls() -> None:
    before = _switches()
    gate = _gate()
    a, b = _inputs()
    with bc.emulate("sm_121", device="cuda"):
        x, y = a.to("cuda"), b.to("cuda")
        gate(x, y)
        with pytest.raises(RuntimeError):
            gate(x, y)
        assert _switches() == before
        x.requires_grad_(True)
        gate(x, y).sum().backward()
        assert _switches() == before
    assert _switches() == before


def test_an_input_given_back_is_the_callers_device_tensor() -> None:
    @torch.jit.script
    def passthrough(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a, b * 2.0

    a, b = _inputs()
    with bc.emulate("sm_121", device="cuda"):
        x, y = a.to("cuda"), b.to("cuda")
        for _ in range(3):
            same, doubled = passthrough(x, y)
            assert same is x
            assert doubled.device.type == "cuda"
            _same(doubled.cpu(), b * 2.0)


CRASHY = textwrap.dedent(
    """
    import torch
    import blackwell_compat as bc

    @torch.jit.script
    def gate(a, b):
        t = a + b
        return torch.tanh(t) * torch.sigmoid(t)

    class Gate(torch.nn.Module):
        def forward(self, a):
            t = a * self.w
            return torch.tanh(t) * torch.sigmoid(t)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(8))

    with bc.emulate("sm_121", device="cuda"):
        x = torch.randn(8, device="cuda", requires_grad=True)
        y = torch.randn(8, device="cuda")
        for _ in range(4):  # tensors that require grad: op by op on the device
            out = gate(x, y)
        out.sum().backward()
        print("grad", x.grad.device)
        module = torch.jit.script(Gate().to("cuda"))
        with torch.no_grad():
            for _ in range(4):  # a scripted module's parameters stay on the device
                out = module(y)
        print("module", out.device)
    """
)


@pytest.mark.slow
def test_paths_that_crashed_the_process_run(tmp_path: Path) -> None:
    """Before the device check, NNC tried to compile the device's fusion group for a GPU that
    is not there and the interpreter died (SIGSEGV) at the second call."""
    program = tmp_path / "crashy.py"  # TorchScript reads the source: a file, not -c
    program.write_text(CRASHY)
    done = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "grad cuda:0" in done.stdout and "module cuda:0" in done.stdout
