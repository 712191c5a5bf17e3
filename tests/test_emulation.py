"""``bc.emulate()``: every inventory op fails on CPU tensors as on an affected GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from support import jit_samples, native_fakes

import blackwell_compat as bc
from blackwell_compat import emulation, state
from blackwell_compat.errors import ConfigError
from blackwell_compat.ops import dispatcher as dispatch
from blackwell_compat.ops import inventory

NVRTC_LINE = "nvrtc: error: invalid value for --gpu-architecture (-arch)"
ENTRIES = inventory.entries(torch.__version__)

warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")


@pytest.fixture(autouse=True)
def _clean_dispatch() -> Iterator[None]:
    yield
    state.reset_for_tests()


def _raises_nvrtc(fn: object) -> str:
    with pytest.raises(RuntimeError) as info:
        fn()  # type: ignore[operator]
    text = str(info.value)
    assert NVRTC_LINE in text
    return text


def _pairs() -> list[tuple[str, torch.dtype]]:
    return [(e.name, d) for e in ENTRIES for d in jit_samples.dtypes_of(e)]


@pytest.mark.parametrize(("entry", "dtype"), _pairs(), ids=lambda v: str(v).replace("torch.", ""))
def test_every_inventory_op_raises_then_works_with_the_guard(
    entry: str, dtype: torch.dtype
) -> None:
    """Each form of each op/dtype: raises inside emulate(), works with the guard, raises after
    revert()."""
    forms = jit_samples.forms(entry, dtype)
    if not forms:
        # PyTorch's CPU kernels reject this dtype (mostly complex32): the emulated failure
        # still comes first, as it would on the GPU.
        forms = jit_samples.calls(entry, dtype)[:1]
        with bc.emulate("sm_121"):
            _raises_nvrtc(forms[0][1])
        return
    with bc.emulate("sm_121"):
        for form, fn in forms:
            text = _raises_nvrtc(fn)
            assert entry in text or any(k in text for k in inventory.by_name()[entry].kernels), form
        report = bc.apply(only="torch")
        assert report.applied == ["torch"], report
        for _form, fn in forms:
            fn()
        bc.revert()
        for _form, fn in forms:
            _raises_nvrtc(fn)


def test_message_names_kernel_op_dtype_and_source() -> None:
    z = torch.tensor([3 + 4j])
    with bc.emulate("sm_121"):
        text = _raises_nvrtc(lambda: z.abs())
    assert "abs_name" in text
    assert "aten::abs.out" in text
    assert "complex64" in text
    assert "AbsKernel.cu" in text
    assert "sm_121" in text


def test_the_fix_names_the_remedy_before_the_guard() -> None:
    # Issue 22: the cheapest exact rung first (fetch nvrtc, then run / apply() before torch).
    with bc.emulate("sm_120"):
        text = _raises_nvrtc(lambda: torch.tensor([3 + 4j]).abs())
    (fix,) = [line for line in text.splitlines() if line.startswith("Fix: ")]
    remedy = fix.index("`python -m blackwell_compat fetch nvrtc`")
    run = fix.index("`python -m blackwell_compat run -- ...`")
    guard = fix.index("the op guard")
    assert remedy < run < guard, fix
    assert "knows sm_120" in fix and "bc.apply() before `import torch`" in fix


def test_arch_is_reported_in_the_message() -> None:
    with bc.emulate("12.0") as arch:
        assert arch == "sm_120"
        text = _raises_nvrtc(lambda: torch.tensor([1.5]).lgamma())
    assert "sm_120" in text


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: torch.tensor([1 + 1j]) * torch.tensor([2 - 1j]), id="complex64 mul"),
        pytest.param(lambda: torch.tensor([1 + 1j]) / 3, id="complex64 div"),
        pytest.param(lambda: torch.tensor([1 + 1j]).sum(), id="complex64 sum"),
        pytest.param(lambda: torch.tensor([1 + 1j]) ** 2, id="complex64 pow 2"),
        pytest.param(lambda: torch.tensor([3.0]).hypot(torch.tensor([4.0])), id="real hypot"),
        pytest.param(lambda: torch.atan2(torch.tensor([1.0]), torch.tensor([2.0])), id="atan2"),
        pytest.param(lambda: torch.tensor([-2.0]).abs(), id="real abs"),
        pytest.param(lambda: torch.tensor([2.0]).exp().sqrt().log(), id="real exp sqrt log"),
        pytest.param(lambda: torch.tensor([2.0]).prod(dtype=torch.bool), id="prod to bool"),
        pytest.param(lambda: torch.tensor([True, False]).all(), id="bool all"),
        pytest.param(lambda: torch.tensor([1.0, 2.0]).cumprod(0), id="cumprod"),
        pytest.param(lambda: torch.tensor([0.5]).erf(), id="erf"),
        pytest.param(lambda: torch.tensor([1 + 1j]).acos(), id="complex acos"),
        pytest.param(lambda: torch.tensor([1.0, 2.0]) ** 0.5, id="real pow 0.5"),
        pytest.param(lambda: torch.tensor([1 + 1j]) ** 1.5, id="complex64 pow 1.5"),
        pytest.param(lambda: torch.tensor([1 + 1j]) ** 1, id="complex pow 1 (copy)"),
        pytest.param(lambda: torch.tensor([4 + 0j]).pow(0.5j), id="complex exponent 0.5j"),
        pytest.param(lambda: torch.float_power(torch.tensor([4 + 1j]), 0.5), id="float_power"),
        pytest.param(
            lambda: torch.div(torch.tensor([7]), 2, rounding_mode="floor"), id="floor div"
        ),
        pytest.param(lambda: torch.view_as_real(torch.tensor([1 + 2j])), id="view_as_real"),
        pytest.param(lambda: torch.polar(torch.tensor([2.0]), torch.tensor([0.5])), id="polar"),
        pytest.param(lambda: torch.complex(torch.tensor([2.0]), torch.tensor([0.5])), id="complex"),
        pytest.param(lambda: torch.tensor([1 + 1j]).conj_physical(), id="complex64 conj_physical"),
        pytest.param(
            lambda: torch.stft(
                torch.randn(64), 16, window=torch.hann_window(16), return_complex=True
            ),
            id="stft",
        ),
        pytest.param(
            lambda: torch.istft(
                torch.stft(torch.randn(64), 16, window=torch.hann_window(16), return_complex=True),
                16,
                window=torch.hann_window(16),
            ),
            id="istft",
        ),
        pytest.param(lambda: torch.fft.rfft(torch.randn(16)), id="rfft"),
        pytest.param(lambda: torch.kaiser_window(1), id="kaiser_window length 1"),
    ],
)
def test_no_false_alarms(call: object) -> None:
    with bc.emulate("sm_121"):
        call()  # type: ignore[operator]


def test_complex_tan_follows_the_torch_version() -> None:
    """Jitted in torch 2.6-2.9, precompiled from 2.10 on: the emulation knows which."""
    z = torch.tensor([1 + 1j])
    with bc.emulate():
        if "tan" in inventory.by_name(torch.__version__):
            _raises_nvrtc(lambda: torch.tan(z))
            _raises_nvrtc(lambda: torch.tanh(z))
        else:
            torch.tan(z)
            torch.tanh(z)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: torch.empty(0, dtype=torch.complex64).abs(), id="abs"),
        pytest.param(lambda: torch.empty(0, 3).lgamma(), id="lgamma"),
        pytest.param(lambda: torch.empty(0).prod(), id="prod"),
        pytest.param(lambda: torch.empty(2, 0).prod(1), id="prod dim"),
        pytest.param(lambda: torch.empty(0, dtype=torch.complex64) ** 0.5, id="pow"),
        pytest.param(lambda: torch.empty(0, dtype=torch.int64).gcd(torch.tensor(4)), id="gcd"),
    ],
)
def test_empty_tensors_never_raise(call: object) -> None:
    with bc.emulate("sm_121"):
        call()  # type: ignore[operator]


def test_pow_only_the_sqrt_exponents_of_complex64_are_jitted() -> None:
    z = torch.tensor([1 + 1j, 2 - 1j])
    with bc.emulate():
        _raises_nvrtc(lambda: z**0.5)
        _raises_nvrtc(lambda: z**-0.5)
        _raises_nvrtc(lambda: z ** torch.tensor(0.5))  # 0-dim exponent: a "CPU scalar"
        z**2
        z**0.25
        z ** torch.tensor([0.5, 0.5])


def test_integer_inputs_of_float_special_functions_are_promoted_and_jitted() -> None:
    with bc.emulate():
        _raises_nvrtc(lambda: torch.tensor([3, 4]).lgamma())
        _raises_nvrtc(lambda: torch.tensor([3, 4]).prod())  # int64 accumulation
        _raises_nvrtc(lambda: torch.tensor([True, False]).prod())


def test_autograd_of_complex_abs_reaches_the_jitted_sgn() -> None:
    z = torch.tensor([3 + 4j], requires_grad=True)
    with bc.emulate():
        with emulation.suspended():
            y = z.abs().sum()
        text = _raises_nvrtc(lambda: y.backward())
    assert "sgn" in text


def test_isclose_on_complex_reaches_abs() -> None:
    z = torch.tensor([1 + 1j])
    with bc.emulate():
        _raises_nvrtc(lambda: torch.isclose(z, z))


def test_inference_mode_and_no_grad_are_covered() -> None:
    z = torch.tensor([1 + 1j])
    with bc.emulate():
        with torch.inference_mode():
            _raises_nvrtc(lambda: z.exp())
            _raises_nvrtc(lambda: torch.tensor([2 + 2j]).log())
        with torch.no_grad():
            _raises_nvrtc(lambda: z.exp())


def test_other_threads_fail_too() -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            torch.tensor([1 + 1j]).exp()
        except RuntimeError as exc:
            errors.append(exc)

    with bc.emulate():
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    assert errors and NVRTC_LINE in str(errors[0])


def test_suspended_thread_sees_no_emulation() -> None:
    with bc.emulate():
        with emulation.suspended():
            assert not emulation.is_active()
            assert torch.tensor([1 + 1j]).exp().dtype == torch.complex64
        assert emulation.is_active()
        _raises_nvrtc(lambda: torch.tensor([1 + 1j]).exp())


def test_nesting_and_exit_remove_the_kernels() -> None:
    assert dispatch.installed_keys() == []
    with bc.emulate("sm_121"):
        with bc.emulate("sm_120") as inner:
            assert inner == "sm_120"
            assert emulation.current_arch() == "sm_120"
        assert emulation.current_arch() == "sm_121"
        assert dispatch.installed_keys()
    assert emulation.current_arch() is None
    assert dispatch.installed_keys() == []
    torch.tensor([1 + 1j]).exp()


def test_bad_arch_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        with bc.emulate("ampere"):
            pass
    assert not emulation.is_active()


def test_probe_reports_the_emulated_gpu_as_affected() -> None:
    with bc.emulate("sm_121"):
        platform = bc.probe()
        assert platform.affected
        assert "sm_121" in [gpu.arch for gpu in platform.gpus]


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, check=False
    )


def test_environment_variable_turns_emulation_on_before_torch_is_imported() -> None:
    code = (
        "import blackwell_compat, torch\n"
        "try:\n"
        "    torch.tensor([1+1j]).exp()\n"
        "except RuntimeError as e:\n"
        "    print('RAISED', 'invalid value for --gpu-architecture' in str(e))\n"
        "print(torch.tensor([1.0]).exp().item() > 2)\n"
    )
    result = _run(code, BLACKWELL_COMPAT_EMULATE="sm_121")
    assert result.returncode == 0, result.stderr
    assert "RAISED True" in result.stdout
    assert "True" in result.stdout.splitlines()[-1]


def test_environment_variable_is_read_once_not_per_op() -> None:
    """A program that changes BLACKWELL_COMPAT_EMULATE later changes nothing (read at import):
    before, every intercepted op re-read it, and a bad value made ``torch.ones(3).sum()``
    raise ConfigError."""
    code = (
        "import os, blackwell_compat, torch\n"
        "from blackwell_compat import emulation\n"
        "os.environ['BLACKWELL_COMPAT_EMULATE'] = 'not-an-arch'\n"
        "print('SUM', torch.ones(3).sum().item())\n"
        "print('ARCH', emulation.current_arch())\n"
        "os.environ.pop('BLACKWELL_COMPAT_EMULATE')\n"
        "try:\n"
        "    torch.tensor([1+1j]).exp()\n"
        "except RuntimeError as e:\n"
        "    print('RAISED', 'invalid value for --gpu-architecture' in str(e))\n"
    )
    result = _run(code, BLACKWELL_COMPAT_EMULATE="sm_121")
    assert result.returncode == 0, result.stderr
    assert "SUM 3.0" in result.stdout
    assert "ARCH sm_121" in result.stdout
    assert "RAISED True" in result.stdout


def test_environment_variable_malformed_is_a_clear_error() -> None:
    result = _run("import blackwell_compat", BLACKWELL_COMPAT_EMULATE="not-an-arch")
    assert result.returncode != 0
    assert "BLACKWELL_COMPAT_EMULATE" in result.stderr


def test_real_nvrtc_that_lacks_the_arch_produces_the_log(nvrtc_libraries: dict[str, str]) -> None:
    """NVRTC 12.8 does not know sm_121: compiling with it gives the very log line."""
    lib_128 = nvrtc_libraries["12.8.93"]
    result, log = emulation.compile_log("sm_121", lib_128)
    assert result == emulation.NVRTC_ERROR_INVALID_OPTION
    assert NVRTC_LINE in log
    real = emulation.real_nvrtc_log("sm_121", lib_128)
    assert real is not None and NVRTC_LINE in real[0]
    # NVRTC 13.0 knows sm_121 and NVRTC 12.8 knows sm_120: no option error, nothing to
    # reproduce.  (A successful compile also needs the matching libnvrtc-builtins, which a bare
    # wheel folder may not resolve; an option error is decided before that.)
    for arch, library in (("sm_121", nvrtc_libraries["13.0.88"]), ("sm_120", lib_128)):
        assert emulation.compile_log(arch, library)[0] != emulation.NVRTC_ERROR_INVALID_OPTION
        assert emulation.real_nvrtc_log(arch, library) is None


def test_message_falls_back_when_no_nvrtc_lacks_the_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulation, "_nvrtc_library", lambda: None)
    with bc.emulate():
        text = _raises_nvrtc(lambda: torch.tensor([1 + 1j]).exp())
    assert "log reproduced" in text


def test_message_uses_the_real_log_when_available(
    nvrtc_libraries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulation, "_nvrtc_library", lambda: nvrtc_libraries["12.8.93"])
    with bc.emulate("sm_121"):
        text = _raises_nvrtc(lambda: torch.tensor([1 + 1j]).exp())
    assert "log produced by compiling for sm_121" in text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF libraries")
def test_an_nvrtc_that_crashes_when_compiling_never_takes_the_program_down(
    tmp_path: Path,
) -> None:
    """The real-log reproduction compiles in a child process: a library that passed the
    probe's version and arch calls but segfaults in nvrtcCompileProgram becomes a fallback
    message (before, it was loaded and called in the user's process and killed it)."""
    crashing = native_fakes.build(
        "fake_nvrtc.c", tmp_path / "crash" / "libnvrtc.so.13", "COMPILE_SEGV"
    )
    working = native_fakes.build("fake_nvrtc.c", tmp_path / "ok" / "libnvrtc.so.13")
    with pytest.raises(OSError, match="killed by signal"):
        emulation.compile_log("sm_121", str(crashing))
    assert emulation.real_nvrtc_log("sm_121", str(crashing)) is None
    result, log = emulation.compile_log("sm_121", str(working))
    assert result == emulation.NVRTC_ERROR_INVALID_OPTION and NVRTC_LINE in log
    real = emulation.real_nvrtc_log("sm_121", str(working))
    assert real is not None and NVRTC_LINE in real[0]
    # Nothing of either library was mapped into this process.
    with open("/proc/self/maps", encoding="utf-8") as maps:
        mapped = maps.read()
    assert str(crashing) not in mapped and str(working) not in mapped
