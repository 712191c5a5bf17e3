"""The pytest plugin against real torch kernels: emulation, patches, markers, parity, xdist.

Every run is a subprocess (``runpytest_subprocess``): the emulation kernels and the op guard
live in torch's dispatcher, which is process-wide, so an in-process run would leak into this
suite.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from blackwell_compat.probing import probe

pytest_plugins = ("pytester",)

NVRTC = "*nvrtc: error: invalid value for --gpu-architecture (-arch)*"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pytest_plugin"

ABS_SUITE = """
import torch

def test_complex_abs():
    z = torch.tensor([3 + 4j, -2j, 0j], dtype=torch.complex64)
    assert torch.equal(z.abs(), torch.tensor([5.0, 2.0, 0.0]))
"""


def _cuda() -> bool:
    return torch.cuda.is_available()


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)


# -- the three runs ---------------------------------------------------------------------


def test_complex_abs_plain_emulated_and_patched(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_abs=ABS_SUITE)

    plain = run(pytester)
    plain.assert_outcomes(passed=1)

    emulated = run(pytester, "--blackwell-emulate")
    emulated.assert_outcomes(failed=1)
    emulated.stdout.fnmatch_lines(
        [
            "*emulation: sm_121 (every test)*",
            "E * RuntimeError: nvrtc: error: invalid value for --gpu-architecture (-arch)",
            "*- blackwell-compat -*",
            "*emulated here*run with --blackwell-compat=on*",
        ]
    )

    patched = run(pytester, "--blackwell-emulate", "--blackwell-compat=on")
    patched.assert_outcomes(passed=1)
    patched.stdout.fnmatch_lines(["*patches on (forced): *torch*; emulation: sm_121*"])


def test_ini_settings_and_auto_under_emulation(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_abs=ABS_SUITE)
    pytester.makeini("[pytest]\nblackwell_emulate = 12.0\nblackwell_compat = auto\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    # auto applies the patches as on the emulated GPU: not forced.
    result.stdout.fnmatch_lines(["*patches auto: *torch*; emulation: sm_120 (every test)*"])
    assert "(forced)" not in result.stdout.str()


# -- markers ----------------------------------------------------------------------------------


MARKER_SUITE = """
import pytest
import torch
import blackwell_compat as bc

Z = torch.tensor([3 + 4j], dtype=torch.complex64)


def torch_patch_state():
    return {s.name: s.state for s in bc.status()}["torch"]


def test_1_before():
    assert torch_patch_state() == "not-applied"
    with pytest.raises(RuntimeError, match="invalid value for --gpu-architecture"):
        Z.abs()


@pytest.mark.blackwell_compat(patches="torch")
def test_2_marked():
    assert torch_patch_state() == "applied"
    assert Z.abs().item() == 5.0


def test_3_after():
    assert torch_patch_state() == "not-applied"
    with pytest.raises(RuntimeError, match="invalid value for --gpu-architecture"):
        Z.abs()


@pytest.mark.blackwell_compat("no_such_patch")
def test_4_unknown_patch():
    pass


@pytest.mark.blackwell_compat(patches="torch", bogus=1)
def test_5_bad_argument():
    pass


@pytest.mark.blackwell_compat
class TestWholeClass:
    def test_6_class_marker(self):
        assert torch_patch_state() == "applied"
        assert Z.angle().item() == pytest.approx(0.9272952)
"""


def test_marker_applies_and_reverts_around_exactly_one_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marker=MARKER_SUITE)
    result = run(pytester, "--blackwell-emulate", "-v", "--strict-markers")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_1_before PASSED*",
            "*test_2_marked PASSED*",
            "*test_3_after PASSED*",
            "*test_4_unknown_patch ERROR*",
            "*test_5_bad_argument ERROR*",
            "*test_6_class_marker PASSED*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*blackwell-compat: apply(only=...): unknown patch name(s) 'no_such_patch'; known*"]
    )
    result.stdout.fnmatch_lines(["*unknown argument(s) bogus; it takes patches=*"])
    assert "Traceback" not in result.stdout.str()


SESSION_AND_MARKER_SUITE = """
import pytest
import torch
import blackwell_compat as bc

Z = torch.tensor([3 + 4j], dtype=torch.complex64)


@pytest.mark.blackwell_compat(patches="torch")
def test_1_marked():
    assert Z.abs().item() == 5.0


def test_2_session_patches_survive_the_marker():
    assert {s.name: s.state for s in bc.status()}["torch"] == "applied"
    assert Z.abs().item() == 5.0
"""


def test_marker_does_not_revert_session_patches(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_session=SESSION_AND_MARKER_SUITE)
    result = run(pytester, "--blackwell-emulate", "--blackwell-compat=on")
    result.assert_outcomes(passed=2)


# -- fixtures ---------------------------------------------------------------------------------


FIXTURE_SUITE = """
import pytest
import torch
import blackwell_compat as bc

Z = torch.tensor([3 + 4j], dtype=torch.complex64)


def state():
    return {s.name: s.state for s in bc.status()}["torch"]


def test_platform_shows_the_emulated_gpu(blackwell_platform):
    assert blackwell_platform.affected
    assert blackwell_platform.emulated_arch == "sm_121"
    assert [g.arch for g in blackwell_platform.gpus if g.emulated] == ["sm_121"]


def test_patched_as_a_factory(blackwell_patched):
    with blackwell_patched("torch") as report:
        assert report.applied == ["torch"]
        assert Z.abs().item() == 5.0
    assert state() == "not-applied"
    with pytest.raises(RuntimeError, match="invalid value for --gpu-architecture"):
        Z.abs()


def test_patched_as_a_context_manager(blackwell_patched):
    with blackwell_patched as report:
        assert "torch" in report.applied
        assert Z.abs().item() == 5.0
    assert state() == "not-applied"


def test_patched_left_open_is_closed_by_the_fixture(blackwell_patched):
    blackwell_patched("torch").__enter__()
    assert state() == "applied"


def test_and_the_next_test_starts_clean():
    assert state() == "not-applied"
"""


def test_platform_and_patched_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fixtures=FIXTURE_SUITE)
    result = run(pytester, "--blackwell-emulate")
    result.assert_outcomes(passed=5)


PARITY_SUITE = """
import pytest
import torch
from blackwell_compat import devices

Z = torch.tensor([3 + 4j, 1e30 + 0j, -1j], dtype=torch.complex64)


def magnitude(z):
    return z.abs()


def sloppy_magnitude(z):
    # A hand-written "fix" taken only on the affected device: overflows above ~1.8e19.
    if devices.tensor_targeted(z):
        return (z.real ** 2 + z.imag ** 2).sqrt()
    return z.abs()


def test_correct_function(assert_cpu_parity):
    out = assert_cpu_parity(magnitude, Z)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, torch.tensor([5.0, 1e30, 1.0]))


def test_nested_outputs_and_extra_arguments(assert_cpu_parity):
    assert_cpu_parity(lambda z, s: {"mag": z.abs() * s, "rest": [z.angle(), z.sgn()]}, Z, 2.0)


def test_inputs_are_copied(assert_cpu_parity):
    z = Z.clone()
    assert_cpu_parity(lambda t: t.mul_(2).sqrt(), z)
    assert torch.equal(z, Z)


def test_explicit_tolerances(assert_cpu_parity):
    assert_cpu_parity(magnitude, Z, rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match="give both rtol and atol, or neither"):
        assert_cpu_parity(magnitude, Z, rtol=1e-3)
    with pytest.raises(TypeError, match="fn must be callable"):
        assert_cpu_parity(Z)


def test_deliberately_wrong_function(assert_cpu_parity):
    assert_cpu_parity(sloppy_magnitude, Z)
"""


@pytest.mark.parametrize("flags", [[], ["--blackwell-emulate", "--blackwell-compat=on"]])
def test_assert_cpu_parity(pytester: pytest.Pytester, flags: list[str]) -> None:
    pytester.makepyfile(test_parity=PARITY_SUITE)
    result = run(pytester, *flags)
    result.assert_outcomes(passed=4, failed=1)
    where = "cuda:*" if _cuda() else "cpu emulating sm_121"
    result.stdout.fnmatch_lines(
        [
            "*def test_deliberately_wrong_function(assert_cpu_parity):",
            ">       assert_cpu_parity(sloppy_magnitude, Z)",
            f"E * AssertionError: assert_cpu_parity: sloppy_magnitude on {where}, patches: *torch*"
            " differs from the CPU reference",
            "E * result: 1 of 3 elements differ; worst at index (1,): device inf, reference 1e+30,"
            " |difference| inf*",
            "E * Tensor-likes are not close!",
        ]
    )
    # The failure points at the test, not into the plugin.
    assert "blackwell_compat/pytest_plugin" not in result.stdout.str()


# -- xdist ------------------------------------------------------------------------------------


XDIST_SUITE = """
import os
import pytest
import torch
import blackwell_compat as bc
from blackwell_compat import emulation


@pytest.mark.parametrize("i", range(6))
def test_worker_has_the_settings(i):
    assert os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw")
    assert emulation.current_arch() == "sm_103"
    assert {s.name: s.state for s in bc.status()}["torch"] == "applied"
    assert torch.tensor([3 + 4j]).abs().item() == 5.0
"""


def test_xdist_workers_apply_the_same_settings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_xdist=XDIST_SUITE)
    result = run(pytester, "-n", "2", "-v", "--blackwell-emulate=sm_103", "--blackwell-compat=on")
    result.assert_outcomes(passed=6)
    out = result.stdout.str()
    assert "[gw0]" in out and "[gw1]" in out
    result.stdout.fnmatch_lines(["*patches on (forced):*; emulation: sm_103 (every test)*"])


# -- the example project ------------------------------------------------------------------------


def test_example_project(pytester: pytest.Pytester) -> None:
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True)
    affected_here = _affected_gpu_here()

    plain = run(pytester)
    plain.assert_outcomes(passed=4 if affected_here else 3, skipped=0 if affected_here else 1)

    broken = run(pytester, "--blackwell-emulate", "-o", "blackwell_compat=off")
    broken.stdout.fnmatch_lines(["*test_a_pure_tone_peaks_in_its_bin*", NVRTC])
    failed = broken.parseoutcomes().get("failed", 0)
    assert failed >= 1

    emulated = run(pytester, "--blackwell-emulate")
    emulated.assert_outcomes(passed=4 if affected_here else 3, skipped=0 if affected_here else 1)
    emulated.stdout.fnmatch_lines(["*patches auto: *torch*; emulation: sm_121 (every test)*"])


def _affected_gpu_here() -> bool:
    return any(gpu.affected and not gpu.emulated for gpu in probe().gpus)


# -- on a real GPU ------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_parity_runs_on_cuda_when_present(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_parity=PARITY_SUITE)
    result = run(pytester)
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*sloppy_magnitude on cuda:0 (*), patches: *torch*"])


# -- fused kernels and user Jiterator kernels (issue 20) ------------------------------------------

FUSED_SUITE = """
import torch

@torch.jit.script
def gate(a, b):
    return torch.tanh(a) * torch.sigmoid(b)

def test_scripted_gate():
    x = torch.randn(8)
    for _ in range(3):
        out = gate(x, x)
    assert torch.allclose(out, torch.tanh(x) * torch.sigmoid(x))

def test_fuser_off_runs_unfused():
    torch._C._jit_override_can_fuse_on_gpu(False)
    try:
        @torch.jit.script
        def other(a, b):
            return torch.tanh(a) * torch.sigmoid(b) + a
        x = torch.randn(8)
        for _ in range(3):
            out = other(x, x)
        assert torch.equal(out, torch.tanh(x) * torch.sigmoid(x) + x)
    finally:
        torch._C._jit_override_can_fuse_on_gpu(True)

def test_user_kernel():
    fn = torch.cuda.jiterator._create_jit_fn(
        "template <typename T> T my_gain(T x, T g) { return x * g; }", g=2.0
    )
    x = torch.randn(4)
    if torch.cuda.is_available():
        x = x.cuda()
    assert torch.equal(fn(x), x * 2.0)
"""


@pytest.mark.slow
def test_fused_and_user_kernels_fail_under_emulation_with_a_hint(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_fused=FUSED_SUITE)
    plain = run(pytester, "-k", "not user_kernel")
    plain.assert_outcomes(passed=2)

    emulated = run(pytester, "--blackwell-emulate")
    emulated.assert_outcomes(passed=1, failed=2)
    emulated.stdout.fnmatch_lines(
        [
            "*emulation: sm_121 (every test)*",
            "*_ test_scripted_gate _*",
            "E * RuntimeError: nvrtc: error: invalid value for --gpu-architecture (-arch)",
            "E * nvrtc compilation failed: ",
            "E * fused kernel fused_tanh_sigmoid_mul (aten::tanh, aten::sigmoid, aten::mul; *",
            "*- blackwell-compat -*",
            "*emulated here*scripted function's fused kernel*--blackwell-compat=on*",
            "*_ test_user_kernel _*",
            "E * RuntimeError: nvrtc: error: invalid value for --gpu-architecture (-arch)",
            "*'my_gain'*",
            "*- blackwell-compat -*",
            "*emulated here*a Jiterator kernel your code wrote*",
        ]
    )


# -- the emulated CUDA device (issue 23) -------------------------------------------------------

GPU_SUITE = """
import pytest
import torch

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_gpu
def test_gpu_path():
    model = torch.nn.Linear(4, 4).to("cuda")
    x = torch.randn(2, 4, device="cuda")
    assert model(x).is_cuda
    torch.exp2(model(x))


def test_cpu_shape_product():
    assert torch.tensor(torch.ones(2, 3, 5).shape[:-1]).prod().item() == 6
"""


@pytest.mark.slow
def test_emulate_device_cuda_runs_the_gpu_path_three_ways(pytester: pytest.Pytester) -> None:
    """A GPU suite and the worked example of docs/emulated-device.md, three ways."""
    pytester.makepyfile(test_gpu=GPU_SUITE)
    example = EXAMPLE.parent / "emulated_device" / "test_vocoder_gpu.py"
    shutil.copy(example, pytester.path / example.name)
    plain = run(pytester)
    plain.assert_outcomes(passed=1, skipped=2)
    on_cpu = run(pytester, "--blackwell-emulate=sm_121")
    on_cpu.assert_outcomes(failed=1, skipped=2)  # the CPU shape product: a false alarm
    emulated = run(pytester, "--blackwell-emulate-device=cuda")
    emulated.assert_outcomes(passed=1, failed=2)
    emulated.stdout.fnmatch_lines([NVRTC])
    emulated.stdout.fnmatch_lines(["*emulation: sm_121*"])
    patched = run(pytester, "--blackwell-emulate-device=cuda", "--blackwell-compat=on")
    patched.assert_outcomes(passed=3)


def test_emulate_device_ini_and_bad_value(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gpu=GPU_SUITE)
    pytester.makeini("[pytest]\nblackwell_emulate = sm_120\nblackwell_emulate_device = cuda\n")
    result = run(pytester, "-k", "gpu_path")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*emulation of sm_120*"])
    bad = run(pytester, "--blackwell-emulate-device=gpu")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--blackwell-emulate-device='gpu'*accepted: 'cpu', 'cuda'*"])
