"""``bc.emulate(arch, device="cuda")``: installing, nesting and removing the emulated device,
and which tensors fail (the device's, never the CPU's)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat import emulated_device, state
from blackwell_compat.errors import ConfigError

NVRTC_LINE = "nvrtc: error: invalid value for --gpu-architecture (-arch)"


def _cuda_attributes() -> dict[str, object]:
    names = ["is_available", "device_count", "get_device_capability", "Stream", "Event", "stream"]
    values: dict[str, object] = {n: getattr(torch.cuda, n) for n in names}
    values.update(
        {f"Tensor.{n}": torch.Tensor.__dict__.get(n) for n in ("to", "cuda", "pin_memory")}
    )
    values["Generator"] = torch.Generator
    values["load"] = torch.load
    values["jit_fn"] = torch.cuda.jiterator._create_jit_fn
    return values


def test_everything_is_restored_exactly_on_exit() -> None:
    before = _cuda_attributes()
    modes = torch._C._len_torch_function_stack()
    with bc.emulate("sm_121", device="cuda"):
        assert torch.cuda.is_available()
        assert torch.cuda.is_available is not before["is_available"]
        assert torch._C._len_torch_function_stack() == modes + 1
    assert _cuda_attributes() == before
    assert torch._C._len_torch_function_stack() == modes
    assert state.emulated_cuda is None and not state.device_mode


def test_default_device_is_cpu_and_keeps_cpu_tensors_failing() -> None:
    with bc.emulate("sm_121"):
        assert state.emulated_cuda is None
        with pytest.raises(RuntimeError, match="gpu-architecture"):
            torch.exp2(torch.ones(2))


def test_cpu_tensors_never_fail_on_the_cuda_device_but_device_tensors_do() -> None:
    shape = torch.ones(2, 3, 5)
    with bc.emulate("sm_121", device="cuda"):
        # The torchaudio convolve false alarm: a CPU shape tensor, multiplied on the CPU.
        assert torch.tensor(shape.shape[:-1]).prod().item() == 6
        assert torch.equal(torch.exp2(torch.tensor([1.0, 2.0])), torch.tensor([2.0, 4.0]))
        x = torch.tensor([1.0, 2.0], device="cuda")
        with pytest.raises(RuntimeError) as info:
            torch.exp2(x)
        assert NVRTC_LINE in str(info.value) and "sm_121" in str(info.value)
        # Complex ops and the backward pass fail too, as on the GPU.
        with pytest.raises(RuntimeError, match="gpu-architecture"):
            torch.exp(torch.ones(2, dtype=torch.complex64).cuda())
        y = torch.ones(3, device="cuda", requires_grad=True)
        out = (y * 2).sum()
        out.backward()
        assert y.grad is not None and y.grad.device.type == "cuda"


def test_nesting_the_innermost_arch_wins_and_a_cpu_block_inside_is_refused() -> None:
    with bc.emulate("sm_121", device="cuda"):
        assert torch.cuda.get_device_capability() == (12, 1)
        with bc.emulate("sm_120", device="cuda"):
            assert torch.cuda.get_device_capability() == (12, 0)
            assert "RTX 5090" in torch.cuda.get_device_name()
        assert torch.cuda.get_device_capability() == (12, 1)
        with pytest.raises(ConfigError, match="device='cpu'"), bc.emulate("sm_121", device="cpu"):
            pass
        assert torch.cuda.is_available()
    assert state.emulated_cuda is None


def test_cuda_block_inside_a_cpu_block_makes_cpu_tensors_plain_then_fail_again() -> None:
    with bc.emulate("sm_121"):
        with bc.emulate("sm_121", device="cuda"):
            assert torch.exp2(torch.ones(1)).item() == 2.0
        with pytest.raises(RuntimeError, match="gpu-architecture"):
            torch.exp2(torch.ones(1))


def test_bad_device_argument_names_the_accepted_values() -> None:
    with pytest.raises(ConfigError, match="'cpu', 'cuda'"):
        bc.emulate("sm_121", device="gpu")
    with pytest.raises(TypeError, match="expected a str"):
        bc.emulate("sm_121", device=torch.device("cuda"))  # type: ignore[arg-type]
    assert state.emulation_stack == [] and state.device_stack == []


def test_apply_serves_the_emulated_device_and_matches_cpu() -> None:
    values = torch.tensor([-0.0, 0.5, -3.0, float("inf"), float("nan"), 1e-40])
    expected = torch.exp2(values)
    with bc.emulate("sm_121", device="cuda"):
        bc.apply()
        try:
            got = torch.exp2(values.to("cuda"))
            assert got.device.type == "cuda"
            host = got.cpu()
            assert host.dtype == expected.dtype and host.stride() == expected.stride()
            torch.testing.assert_close(host, expected, equal_nan=True, rtol=0, atol=0)
            assert torch.equal(torch.signbit(host), torch.signbit(expected))
        finally:
            bc.revert()


def test_audit_records_name_the_device() -> None:
    from blackwell_compat.ops import dispatcher

    seen = []
    with bc.emulate("sm_121", device="cuda"):
        previous = dispatcher.set_recorder(seen.append)
        try:
            result = torch.exp2(torch.ones(2, device="cuda"))
            torch.exp2(torch.ones(2))  # a CPU tensor: not a device call
        finally:
            dispatcher.set_recorder(previous)
        assert torch.equal(result.cpu(), torch.full((2,), 2.0))
    assert [c.device for c in seen] == ["cuda:0"]


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
        check=False,
    )


def test_environment_variable_installs_the_device_at_import_torch() -> None:
    done = _run(
        """
        import blackwell_compat, torch
        x = torch.ones(2, device="cuda")
        print(torch.cuda.is_available(), x.device, torch.cuda.get_device_capability())
        print(torch.exp2(torch.ones(1)).item())
        try:
            torch.exp2(x)
        except RuntimeError as e:
            print("device fails:", "gpu-architecture" in str(e))
        """,
        {"BLACKWELL_COMPAT_EMULATE": "sm_121", "BLACKWELL_COMPAT_EMULATE_DEVICE": "cuda"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["True cuda:0 (12, 1)", "2.0", "device fails: True"]


def test_a_bad_environment_value_is_a_clear_error() -> None:
    done = _run(
        "import blackwell_compat",
        {"BLACKWELL_COMPAT_EMULATE": "sm_121", "BLACKWELL_COMPAT_EMULATE_DEVICE": "gpu"},
    )
    assert "BLACKWELL_COMPAT_EMULATE_DEVICE" in done.stderr and "'cpu', 'cuda'" in done.stderr
    assert done.returncode != -6 and "terminate called" not in done.stderr


PATHS_TO_CPP = """
import torch, blackwell_compat as bc
with bc.emulate("sm_121", device="cuda"):
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    m.to("cuda"); m.cuda(); m.to(0); m.to(torch.device("cuda:0")); m.half(); m.float()
    x = torch.randn(3, 4, device=0)
    m(x).sum().backward()
    torch.zeros(2).to("cuda", non_blocking=True).pin_memory
    torch.zeros(2).pin_memory().cuda(non_blocking=True)
    torch.empty(2, device="cuda").new_zeros(3)
    torch.cuda.synchronize(); torch.cuda.empty_cache()
    for bad in (lambda: torch.zeros(1, device="cuda:1"), lambda: x.to("cuda:3"),
                lambda: torch.cuda.CUDAGraph(), lambda: x.untyped_storage(), lambda: x.numpy()):
        try:
            bad()
        except (RuntimeError, TypeError) as e:
            print("refused:", type(e).__name__)
print("done", torch.cuda.is_available())
"""


def test_paths_that_reach_cpp_never_abort_the_process() -> None:
    done = _run(PATHS_TO_CPP)
    assert "terminate called" not in done.stderr
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("refused:") == 5
    assert done.stdout.strip().endswith("done False")


def test_reset_for_tests_removes_the_device() -> None:
    cm = bc.emulate("sm_121", device="cuda")
    cm.__enter__()
    assert state.emulated_cuda is not None
    state.reset_for_tests()
    assert state.emulated_cuda is None and not torch.cuda.is_available()
    assert emulated_device.wanted_arch() is None


@pytest.mark.targets
@pytest.mark.torchaudio
@pytest.mark.parametrize("strategy", ["cpu", "real"])
def test_targeted_patch_serves_the_device(strategy: str) -> None:
    """torchaudio's kaldi fbank: fails on the device, served by the patch; the `cpu` strategy
    moves the data off the device and back, bit-identical to the CPU."""
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    torch.manual_seed(0)
    wave = torch.randn(1, 4000)
    reference = kaldi.fbank(wave)
    with bc.emulate("sm_121", device="cuda"):
        on_device = wave.to("cuda")
        with pytest.raises(RuntimeError, match="gpu-architecture"):
            kaldi.fbank(on_device)
        assert torch.equal(kaldi.fbank(wave), reference)  # CPU tensors never fail
        bc.apply(only="torchaudio", strategies={"torchaudio": strategy})
        try:
            got = kaldi.fbank(on_device)
        finally:
            bc.revert()
    assert got.is_cuda and got.device == torch.device("cuda", 0)
    host = got.cpu()
    assert host.dtype == reference.dtype and host.shape == reference.shape
    assert host.stride() == reference.stride()
    if strategy == "cpu":
        assert torch.equal(host, reference)
    else:
        torch.testing.assert_close(host, reference, rtol=1e-4, atol=1e-4)


def test_out_resize_and_in_place_view_ops_keep_the_tensor_metadata_true() -> None:
    with bc.emulate("sm_121", device="cuda"):
        a = torch.arange(4.0, device="cuda")
        out = torch.empty(0, device="cuda")
        result = torch.add(a, a, out=out)
        assert result is out and out.shape == (4,) and out.cpu().tolist() == [0, 2, 4, 6]
        x = torch.ones(2, 3, device="cuda")
        x.unsqueeze_(0)
        assert x.shape == (1, 2, 3) and x.cpu().shape == (1, 2, 3)
        x.squeeze_(0)
        assert x.shape == (2, 3)
        y = torch.ones(2, device="cuda")
        y.resize_(5)
        assert y.shape == (5,) and y[:2].cpu().tolist() == [1.0, 1.0]


def test_set_default_device_cuda_makes_device_tensors() -> None:
    with bc.emulate("sm_121", device="cuda"):
        torch.set_default_device("cuda")
        try:
            t = torch.ones(2)
            assert t.is_cuda and t.device == torch.device("cuda", 0)
            with pytest.raises(RuntimeError, match="gpu-architecture"):
                torch.kaiser_window(8)  # a factory Jiterator op, on the device
        finally:
            torch.set_default_device(None)
        assert not torch.ones(2).is_cuda
        assert torch.kaiser_window(8).shape == (8,)  # the CPU factory never fails
