"""Emulation of fused kernels: a scripted function the GPU would fuse fails where it compiles."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from support.fuser_switches import set_switches as _set_switches
from support.fuser_switches import switches as _switches

import blackwell_compat as bc
from blackwell_compat import emulation, fused_kernels, state
from blackwell_compat.ops import dispatcher as dispatch

NVRTC_LINE = "nvrtc: error: invalid value for --gpu-architecture (-arch)"
C = torch._C


@pytest.fixture(autouse=True)
def _fuser_switches() -> Iterator[None]:
    before = _switches()
    yield
    state.reset_for_tests()
    _set_switches(before)


def _gate() -> Any:
    """A fresh scripted WaveNet-style gate (plans are per function: each test its own)."""

    @torch.jit.script
    def gate(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
        t = a + b
        return torch.tanh(t[:, :n]) * torch.sigmoid(t[:, n:])

    return gate


def _eager_gate(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    t = a + b
    return torch.tanh(t[:, :n]) * torch.sigmoid(t[:, n:])


def _inputs() -> tuple[torch.Tensor, torch.Tensor, int]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g), 4


def _calls_until_error(fn: Any, args: tuple[Any, ...], calls: int = 5) -> tuple[int, str]:
    """The 1-based index of the first call that raised, and its message (0, "" if none)."""
    for index in range(1, calls + 1):
        try:
            fn(*args)
        except RuntimeError as exc:
            return index, str(exc)
    return 0, ""


def test_raises_the_gpu_error_at_the_call_after_the_profiling_run() -> None:
    gate, args = _gate(), _inputs()
    with bc.emulate("sm_121"):
        first = gate(*args)  # the profiling run: not fused yet, as on the GPU
        torch.testing.assert_close(first, _eager_gate(*args), rtol=0, atol=0)
        index, text = _calls_until_error(gate, args)
    assert index == 1  # the very next call, where NNC builds (and the GPU compiles) the group
    assert text.startswith(NVRTC_LINE)
    assert "\nnvrtc compilation failed: \n" in text
    assert "fused_tanh_sigmoid_mul" in text
    assert "aten::tanh, aten::sigmoid, aten::mul" in text
    assert "'gate'" in text and "float32" in text
    assert "fetch nvrtc" in text and "fuser rung" in text


def test_every_later_call_raises_too_and_after_the_block_it_runs() -> None:
    gate, args = _gate(), _inputs()
    with bc.emulate("sm_121"):
        gate(*args)
        for _ in range(3):
            with pytest.raises(RuntimeError, match="fused_tanh_sigmoid_mul"):
                gate(*args)
    assert not fused_kernels.installed()
    assert C.ScriptFunction.__dict__["__call__"].__qualname__ != "blackwell_compat_scripted_call"
    gate(*args)


def test_kernel_name_is_built_from_the_ops_as_nnc_names_them() -> None:
    @torch.jit.script
    def quat_where(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(x == y, x / y, x * y)

    args = (torch.randn(16), torch.randn(16))
    with bc.emulate("sm_100"):
        index, text = _calls_until_error(quat_where, args)
    assert index == 2
    assert "fused_eq_div_mul_where" in text
    assert "emulation of sm_100" in text
    assert fused_kernels.kernel_name(("prim::Constant", "aten::add", "aten::tanh")) == (
        "fused_add_tanh"
    )


def test_scripted_module_forward_raises() -> None:
    class Step(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x * 2.0 + 1.0).sin() * x

    module = torch.jit.script(Step())
    with bc.emulate("sm_121"):
        index, text = _calls_until_error(module, (torch.randn(5),))
    assert index == 2
    assert "'Step.forward'" in text and "fused_mul_add_sin_mul" in text


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_results_before_the_failing_call_are_the_cpu_results(dtype: torch.dtype) -> None:
    @torch.jit.script
    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x * 2.0 + y).sin() * y - x

    x = torch.tensor([0.0, -0.0, 1.5, float("inf"), float("nan"), 1e-40], dtype=dtype)
    y = torch.tensor([-0.0, 0.0, -2.0, 1.0, 3.0, -1e-40], dtype=dtype)
    with bc.emulate("sm_121"):
        out = step(x, y)
    expected = (x * 2.0 + y).sin() * y - x
    assert out.dtype == expected.dtype and out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(torch.signbit(out), torch.signbit(expected))


def test_nothing_fusible_never_raises() -> None:
    @torch.jit.script
    def reduce(a: torch.Tensor) -> torch.Tensor:
        return a.sum(0)

    @torch.jit.script
    def single(a: torch.Tensor) -> torch.Tensor:
        return torch.sin(a)

    @torch.jit.script
    def matmul(a: torch.Tensor) -> torch.Tensor:
        return a @ a.t()

    a = torch.randn(4, 4)
    with bc.emulate("sm_121"):
        for fn in (reduce, single, matmul):
            assert _calls_until_error(fn, (a,), calls=6) == (0, "")


def test_plain_code_never_raises() -> None:
    args = _inputs()
    with bc.emulate("sm_121"):
        for _ in range(5):
            _eager_gate(*args)
            torch.tanh(args[0]) * torch.sigmoid(args[1])


@pytest.mark.parametrize(
    "switch",
    [
        "can_fuse_on_gpu",
        "texpr_fuser",
        "fuser_none_context",
    ],
)
def test_no_raise_when_the_gpu_fuser_is_off(switch: str) -> None:
    gate, args = _gate(), _inputs()
    with bc.emulate("sm_121"):
        if switch == "can_fuse_on_gpu":
            C._jit_override_can_fuse_on_gpu(False)
            assert _calls_until_error(gate, args) == (0, "")
        elif switch == "texpr_fuser":
            C._jit_set_texpr_fuser_enabled(False)
            assert _calls_until_error(gate, args) == (0, "")
        else:
            with torch.jit.fuser("none"):
                assert _calls_until_error(gate, args) == (0, "")


def test_switch_read_live_and_an_unfused_plan_stays_unfused() -> None:
    """The plan is fused on the CPU exactly when the GPU would have fused it at that call:
    optimised with the fuser off, it stays unfused after the fuser is turned back on (as on
    the GPU); a fresh function fuses and raises."""
    gate, args = _gate(), _inputs()
    with bc.emulate("sm_121"):
        C._jit_override_can_fuse_on_gpu(False)
        for _ in range(3):
            out = gate(*args)
        assert torch.equal(out, _eager_gate(*args))  # unfused: the eager kernels, bit-exact
        C._jit_override_can_fuse_on_gpu(True)
        assert _calls_until_error(gate, args) == (0, "")
        assert _calls_until_error(_gate(), args)[0] == 2


def test_no_raise_when_the_nvrtc_remedy_serves_the_arch() -> None:
    gate, args = _gate(), _inputs()
    with bc.emulate("sm_121"):
        state.nvrtc_served_archs = frozenset({"sm_121"})
        assert _calls_until_error(gate, args) == (0, "")
        state.nvrtc_served_archs = frozenset({"sm_120"})
        assert _calls_until_error(_gate(), args)[0] == 2


def test_suspended_thread_sees_no_emulation() -> None:
    gate, args = _gate(), _inputs()
    with bc.emulate("sm_121"), emulation.suspended():
        assert _calls_until_error(gate, args) == (0, "")


@pytest.mark.parametrize("user", [(False, True), (True, False), (True, True), (False, False)])
def test_user_cpu_fusion_settings_restored_exactly(user: tuple[bool, bool]) -> None:
    cpu, llvm = user
    C._jit_override_can_fuse_on_cpu(cpu)
    C._jit_set_te_must_use_llvm_cpu(llvm)
    before = _switches()
    gate, args = _gate(), _inputs()
    with bc.emulate("sm_121"):
        gate(*args)
        assert _switches() == before  # between calls: the user's values
        with pytest.raises(RuntimeError):
            gate(*args)
        assert _switches() == before
        with bc.emulate("sm_120"):  # nested blocks: still wrapped until the last one ends
            pass
        assert fused_kernels.installed()
    assert not fused_kernels.installed()
    assert _switches() == before


def test_threads_each_raise_and_settings_come_back() -> None:
    before = _switches()
    errors: list[str] = []
    args = _inputs()

    def work() -> None:
        errors.append(str(_calls_until_error(_gate(), args)[0]))

    with bc.emulate("sm_121"):
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == ["2"] * 4
    assert _switches() == before


def test_audit_recorder_gets_each_group_with_the_rung_and_the_program_continues() -> None:
    seen: list[Any] = []
    args = _inputs()
    with bc.emulate("sm_121"):
        previous = dispatch.set_recorder(seen.append)
        try:
            gate = _gate()
            for _ in range(3):
                out = gate(*args)
            C._jit_override_can_fuse_on_gpu(False)
            fuser_gate = _gate()
            for _ in range(3):
                fuser_gate(*args)
            C._jit_override_can_fuse_on_gpu(True)
            state.nvrtc_served_archs = frozenset({"sm_121"})
            remedy_gate = _gate()
            for _ in range(3):
                remedy_gate(*args)
        finally:
            dispatch.set_recorder(previous)
    torch.testing.assert_close(out, _eager_gate(*args))
    modes = [r.mode for r in seen]
    assert modes == ["emulate", "emulate", "fuser", "fuser", "remedy", "remedy"]
    record = seen[0]
    assert record.op == fused_kernels.FUSED_OP
    assert record.entry == "gate" and record.kernel == "fused_tanh_sigmoid_mul"
    assert record.fused_ops == ("aten::tanh", "aten::sigmoid", "aten::mul")
    assert record.dtype == "float32"
    assert record.source.endswith(":" + str(_gate.__code__.co_firstlineno + 6))


@pytest.mark.parametrize(
    "imports", ["import blackwell_compat, torch", "import torch, blackwell_compat"]
)
def test_environment_variable_turns_it_on_in_a_fresh_process(imports: str, tmp_path: Any) -> None:
    program = tmp_path / "program.py"
    program.write_text(
        imports
        + textwrap.dedent(
            """

            @torch.jit.script
            def gate(a, b):
                return torch.tanh(a) * torch.sigmoid(b)

            x = torch.randn(4)
            for i in range(1, 4):
                try:
                    gate(x, x)
                except RuntimeError as exc:
                    print("raised at call", i)
                    print(str(exc))
                    break
            else:
                print("never raised")
            """
        )
    )
    env = {**os.environ, "BLACKWELL_COMPAT_EMULATE": "sm_121"}
    done = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["raised at call 2", NVRTC_LINE, "nvrtc compilation failed: "]
    assert lines[3].startswith("fused kernel fused_tanh_sigmoid_mul ")


def test_scalar_arguments_of_the_group_are_read_without_failing() -> None:
    @torch.jit.script
    def normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
        return x / x.norm(p=2, dim=-1).clamp(min=eps).unsqueeze(-1)

    args = (torch.randn(6, 4), 1e-9)
    with bc.emulate("sm_121"):
        index, text = _calls_until_error(normalize, args)
    assert index == 2
    assert "fused_clamp_unsqueeze_div (aten::clamp, aten::unsqueeze, aten::div; float32)" in text


def test_long_kernel_names_are_shortened_as_nnc_does() -> None:
    ops = tuple(f"aten::{op}" for op in ("mul", "add", "sub") * 5)
    name = fused_kernels.kernel_name(ops)
    assert len(name) <= fused_kernels.MAX_NAME
    assert name == "fused_mul_add_sub_m_<hash>"  # 19 characters, "_", the hash
    assert fused_kernels.kernel_name(("aten::tanh",) * 4) == "fused_tanh_tanh_tanh_tanh"


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_inference_calls_on_tensors_that_require_grad_raise(context: Any) -> None:
    x = torch.randn(3, 10, requires_grad=True)
    with bc.emulate("sm_121"), context():
        index, text = _calls_until_error(_gate(), (x, x, 5))
    assert index == 2 and "fused_tanh_sigmoid_mul" in text


def test_traced_module_raises_too() -> None:
    class Policy(torch.nn.Module):
        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return torch.tanh(obs * 0.5 + 0.1) * obs

    traced = torch.jit.trace(Policy(), torch.randn(4, 3))
    with bc.emulate("sm_121"):
        index, text = _calls_until_error(traced, (torch.randn(4, 3),))
    # trace()'s own check ran the traced graph once (the profiling run), as it does on a GPU:
    # the first call after it is the one that fuses.
    assert index == 1
    assert "'Policy.forward'" in text and "fused_mul_add_tanh_mul" in text


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_calls_fail_where_the_gpu_fuses_them(dtype: torch.dtype) -> None:
    """The CPU fuses no float16/bfloat16 chain, CUDA does: a float32 shadow of the call (in an
    executor of its own) shows the group, and the call fails at the GPU's compiling call with
    its own dtype; the first (profiling) call's result is the eager one; with the GPU fuser
    off nothing fails and the user's plans stay unfused."""
    gate = _gate()
    a = torch.randn(3, 8, dtype=dtype)
    b = torch.randn(3, 8, dtype=dtype)
    with bc.emulate("sm_121"):
        first = gate(a, b, 4)
        for _ in range(2):
            with pytest.raises(RuntimeError) as info:
                gate(a, b, 4)
            assert NVRTC_LINE in str(info.value)
            assert f"; {str(dtype).replace('torch.', '')})" in str(info.value)
    want = _eager_gate(a, b, 4)
    assert first.dtype == want.dtype and torch.equal(first, want)
    C._jit_override_can_fuse_on_gpu(False)
    quiet = _gate()
    with bc.emulate("sm_121"):
        outs = [quiet(a, b, 4) for _ in range(4)]
    assert all(torch.equal(o, want) for o in outs)
    assert not torch.jit.last_executed_optimized_graph().findAllNodes(fused_kernels.FUSED_OP, True)
