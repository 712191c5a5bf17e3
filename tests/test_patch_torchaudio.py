"""The ``torchaudio`` patch: kaldi fbank/spectrogram/mfcc, functional.spectrogram (Spectrogram,
MelSpectrogram, MFCC), griffinlim (GriffinLim) and phase_vocoder (TimeStretch).

Parity: every case of ``tests/golden/cases_torchaudio.py`` is computed (1) on the CPU unpatched
as the reference, (2) under emulation unpatched, where it must fail with the NVRTC error, and
(3) under emulation with only this patch, where it must match the reference: ``real`` with the
float32 ``assert_close`` defaults (bounds that differ are stated next to the case), ``cpu`` bit
for bit.  Outputs are also checked against the committed goldens.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from golden import store
from support.audio_parity import (
    NVRTC_ERROR,
    assert_fails_unpatched,
    assert_identical,
    cuda_available,
    patched_emulation,
    patched_run,
    reference,
)
from support.patch_suite import module_copy, run_gpu_script, run_json_script

import blackwell_compat as bc
from blackwell_compat import engine, inplace, spectral
from blackwell_compat import state as process_state
from blackwell_compat.errors import BlackwellCompatWarning

pytestmark = pytest.mark.targets

GOLDEN = "torchaudio"
PATCH = "torchaudio"


def _cases() -> dict[str, Any]:
    from golden.cases_torchaudio import CASES

    return CASES


CASE_NAMES = [
    "kaldi_fbank_default",
    "kaldi_fbank_wespeaker",
    "kaldi_fbank_options",
    "kaldi_fbank_linear",
    "kaldi_fbank_vtln",
    "kaldi_fbank_float64",
    "kaldi_spectrogram_default",
    "kaldi_spectrogram_options",
    "kaldi_mfcc_default",
    "kaldi_mfcc_energy",
    "spectrogram_power2",
    "spectrogram_power1_normalized",
    "spectrogram_power_0_5",
    "spectrogram_complex",
    "melspectrogram_batched",
    "mfcc_transform",
    "spectral_centroid",
    "griffinlim",
    "griffinlim_from_spectrogram",
    "time_stretch_f32",
    "phase_vocoder_float64",
]


def test_case_list_matches_the_golden_registry() -> None:
    assert sorted(CASE_NAMES) == sorted(_cases())
    assert sorted(store.load(GOLDEN)["cases"]) == sorted(_cases())


@pytest.fixture(scope="module")
def references() -> dict[str, Any]:
    process_state.reset_for_tests()
    return {name: reference(case.run) for name, case in _cases().items()}


def _time_stretch_bound(ref: torch.Tensor) -> float:
    """The float32 phase vocoder's own error: its distance to the same computation in float64.

    Phases are accumulated over frames with a cumulative sum, so any ulp-level change of one
    phase difference (atan2 vs the complex angle kernel differ by an ulp) shifts all later
    outputs by up to ulp(accumulated phase) x magnitude; the float32 reference carries errors of
    that size itself.  Measured on this case: rewrite vs reference 0.0022, this bound 0.0051."""
    import math

    import torchaudio.functional as F
    import torchaudio.transforms as T
    from golden.signals import speechlike

    spec = T.Spectrogram(n_fft=256, hop_length=64, power=None)(speechlike(8000))
    advance = torch.linspace(0, math.pi * 64, 129, dtype=torch.float64)[..., None]
    exact = F.phase_vocoder(spec.to(torch.complex128), 1.25, advance)
    return float((ref.to(torch.complex128) - exact).abs().max())


# -- (1) the reference -------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES)
def test_reference_matches_golden(name: str, references: dict[str, Any]) -> None:
    store.assert_matches_golden(GOLDEN, name, references[name])


# -- (2) unpatched under emulation -------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES)
def test_unpatched_fails_under_emulation(name: str, references: dict[str, Any]) -> None:
    case = _cases()[name]
    if case.jitted:
        assert_fails_unpatched(case.run)
    else:
        # No Jiterator kernel on this path: emulation must not raise a false alarm.
        with bc.emulate():
            assert_identical(case.run(), references[name])


# -- (3) patched under emulation ---------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES)
def test_real_strategy_matches_reference(name: str, references: dict[str, Any]) -> None:
    case = _cases()[name]
    out = patched_run(case.run, PATCH, "real")
    ref = references[name]
    if name == "time_stretch_f32":
        bound = _time_stretch_bound(ref)
        assert out.dtype == ref.dtype and out.shape == ref.shape
        assert float((out - ref).abs().max()) <= bound, bound
    else:
        torch.testing.assert_close(out, ref, **(case.tolerance or {}))
    store.assert_matches_golden(GOLDEN, name, out)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cpu_strategy_is_bit_identical(name: str, references: dict[str, Any]) -> None:
    out = patched_run(_cases()[name].run, PATCH, "cpu")
    assert_identical(out, references[name])


# -- strategies, routing ---------------------------------------------------------------------


def _fbank_case() -> Any:
    return _cases()["kaldi_fbank_wespeaker"]


def test_strategy_from_environment_variable(
    monkeypatch: pytest.MonkeyPatch, references: dict[str, Any]
) -> None:
    monkeypatch.setenv("BLACKWELL_COMPAT_STRATEGY", "torchaudio=cpu")
    with bc.emulate(), bc.patched(only=PATCH) as report:
        (entry,) = report.entries
        assert entry.strategy == "cpu"
        assert_identical(_fbank_case().run(), references["kaldi_fbank_wespeaker"])


def test_unknown_strategy_is_a_clear_error() -> None:
    with pytest.raises(bc.ConfigError, match=r"no strategy 'gpu'.*real, cpu"):
        bc.apply(only=PATCH, strategies={PATCH: "gpu"}, force=True)
    assert not engine._records


def test_status_lists_the_patch_and_its_strategy() -> None:
    (before,) = [s for s in bc.status() if s.name == PATCH]
    assert before.strategies == ("real", "cpu")
    assert before.distribution == "torchaudio"
    with bc.emulate(), bc.patched(only=PATCH, strategies={PATCH: "cpu"}):
        (entry,) = [s for s in bc.status() if s.name == PATCH]
        assert entry.state == "applied" and entry.strategy == "cpu"


def test_only_affected_tensors_take_the_rewrite(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside emulation the CPU is not affected: the original code runs even while the patch
    is applied; inside emulation the rewrite runs (here it hits the sentinel)."""

    class Sentinel(Exception):
        pass

    def boom(z: Any) -> Any:
        raise Sentinel

    run = _fbank_case().run
    with bc.patched(only=PATCH, force=True):
        monkeypatch.setattr(spectral, "magnitude", boom)
        monkeypatch.setattr(spectral, "power", boom)
        expected = run()  # CPU, no emulation: original kernels, no sentinel
        with bc.emulate():
            with pytest.raises(Sentinel):
                run()
            monkeypatch.undo()
            torch.testing.assert_close(run(), expected)


def test_cpu_strategy_runs_the_reference_outside_the_emulated_failure(
    monkeypatch: pytest.MonkeyPatch, references: dict[str, Any]
) -> None:
    calls: list[Any] = []
    real_magnitude = spectral.magnitude

    def spy(z: Any) -> Any:
        calls.append(z)
        return real_magnitude(z)

    monkeypatch.setattr(spectral, "magnitude", spy)
    monkeypatch.setattr(spectral, "power", spy)
    out = patched_run(_fbank_case().run, PATCH, "cpu")
    assert not calls  # no rewrite involved: the complex kernels ran, outside emulation
    assert_identical(out, references["kaldi_fbank_wespeaker"])
    with bc.emulate(), pytest.raises(RuntimeError, match=NVRTC_ERROR):
        _fbank_case().run()  # and emulation is back in force after the call


def test_partial_and_vmap_built_before_apply(references: dict[str, Any]) -> None:
    """pyannote's pattern: functools.partial(kaldi.fbank, ...) captured early, run under vmap."""
    import torchaudio.compliance.kaldi as kaldi
    from golden.signals import speechlike

    fbank = functools.partial(kaldi.fbank, num_mel_bins=80, window_type="hamming", dither=0.0)
    batch = torch.stack([speechlike(8000, seed=s) for s in range(3)]) * 32768.0
    expected = reference(lambda: torch.vmap(fbank)(batch))
    with bc.emulate(), pytest.raises(RuntimeError, match=NVRTC_ERROR):
        torch.vmap(fbank)(batch)
    torch.testing.assert_close(patched_run(lambda: torch.vmap(fbank)(batch), PATCH), expected)
    assert_identical(patched_run(lambda: torch.vmap(fbank)(batch), PATCH, "cpu"), expected)


@pytest.mark.parametrize("strategy", ["real", "cpu"])
def test_gradients_match_the_reference(strategy: str) -> None:
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.transforms as T
    from golden.signals import speechlike

    def grads(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        wave = speechlike(8000).to(dtype)
        mel = T.MelSpectrogram(16000, n_fft=400, n_mels=40).to(dtype)
        w1 = wave.clone().requires_grad_(True)
        kaldi.fbank(w1, num_mel_bins=40).sum().backward()
        w2 = wave.clone().requires_grad_(True)
        mel(w2).log1p().sum().backward()
        assert w1.grad is not None and w2.grad is not None
        return w1.grad, w2.grad

    expected = reference(grads)
    with bc.emulate(), pytest.raises(RuntimeError, match=NVRTC_ERROR):
        grads()
    got = patched_run(grads, PATCH, strategy)
    if strategy == "cpu":
        for value, ref in zip(got, expected, strict=True):
            assert_identical(value, ref)
        return
    # The gradients go through 1/x of the log energies, which amplifies the ulp-level
    # differences of the power spectrum where energies are small (measured: 3e-5 relative at
    # one element of 8000).  Bound: twice the float32 reference's own distance to float64.
    exact = reference(lambda: grads(torch.float64))
    for value, ref, ref64 in zip(got, expected, exact, strict=True):
        own_error = float((ref.double() - ref64).abs().max())
        assert float((value.double() - ref.double()).abs().max()) <= 2 * own_error, own_error


def test_too_short_signal_gives_the_same_empty_result() -> None:
    import torchaudio.compliance.kaldi as kaldi

    wave = torch.ones(1, 800)
    for fn in (kaldi.fbank, kaldi.spectrogram):
        expected = fn(wave, min_duration=1.0)
        out = patched_run(lambda fn=fn: fn(wave, min_duration=1.0), PATCH, "real")
        assert out.shape == expected.shape == (0,)
        assert out.dtype == expected.dtype and out.device == expected.device


def test_invalid_arguments_keep_torchaudio_errors() -> None:
    import torchaudio.functional as F

    spec = torch.ones(1, 129, 10)
    window = torch.hann_window(256)
    with pytest.raises(ValueError, match="momentum") as unpatched:
        F.griffinlim(spec, window, 256, 64, 256, 2.0, 4, 1.5, None, False)
    with patched_emulation(PATCH, "real"), pytest.raises(ValueError, match="momentum") as got:
        F.griffinlim(spec, window, 256, 64, 256, 2.0, 4, 1.5, None, False)
    assert str(got.value) == str(unpatched.value)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_signature_and_torchscript_still_see_torchaudio_code() -> None:
    """inspect.signature() reports torchaudio's parameters; torch.jit.script compiles
    torchaudio's own source (scripted modules keep the unpatched behaviour, documented)."""
    import inspect

    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional as F
    import torchaudio.transforms as T

    wave = torch.sin(torch.arange(1600.0) / 5).unsqueeze(0)
    params = {f: list(inspect.signature(f).parameters) for f in (kaldi.fbank, F.spectrogram)}
    scripted_ref = torch.jit.script(T.Spectrogram())(wave)
    with bc.patched(only=PATCH, force=True):
        assert {f: list(inspect.signature(f).parameters) for f in params} == params
        scripted = torch.jit.script(T.Spectrogram())
        assert_identical(scripted(wave), scripted_ref)


def _scripted_cases() -> dict[str, tuple[Callable[[], Any], Callable[[Any, torch.dtype], Any]]]:
    """name -> (make the scripted callable, run it on float32 or float64 input)."""
    import math

    import torchaudio.functional as F
    import torchaudio.transforms as T

    gen = torch.Generator().manual_seed(0)
    wave = torch.randn(1, 8000, generator=gen, dtype=torch.float64)
    window = torch.hann_window(400, dtype=torch.float64)
    spec = torch.stft(wave, 400, 100, window=window, return_complex=True)
    advance = torch.linspace(0, math.pi * 100, 201, dtype=torch.float64)[..., None]
    complex_of = {torch.float32: torch.complex64, torch.float64: torch.complex128}

    def pitch_shift() -> Any:
        module = T.PitchShift(16000, 4)
        module(wave.float())  # a lazy module: its kernel exists after one call
        return module

    def griffin_lim(m: Any, d: torch.dtype) -> Any:
        torch.manual_seed(1)  # its initial phases are random
        return m(spec.abs().to(d))

    return {
        "TimeStretch": (
            lambda: T.TimeStretch(hop_length=100, n_freq=201, fixed_rate=1.25),
            lambda m, d: m(spec.to(complex_of[d])),
        ),
        "phase_vocoder": (
            lambda: F.phase_vocoder,
            lambda f, d: f(spec.to(complex_of[d]), 1.25, advance.to(d)),
        ),
        "PitchShift": (pitch_shift, lambda m, d: m.to(d)(wave.to(d))),
        "Spectrogram": (T.Spectrogram, lambda m, d: m.to(d)(wave.to(d))),
        "MelSpectrogram": (T.MelSpectrogram, lambda m, d: m.to(d)(wave.to(d))),
        "MFCC": (T.MFCC, lambda m, d: m.to(d)(wave.to(d))),
        "GriffinLim": (lambda: T.GriffinLim(n_fft=400, n_iter=8), griffin_lim),
    }


#: Scripted transforms whose output under the op guard differs from the CPU's (documented).
SCRIPTED_NOT_IDENTICAL = ("TimeStretch", "phase_vocoder", "PitchShift")
#: Every case of :func:`_scripted_cases` (named here: collection must not import torchaudio,
#: which sessions without target libraries do not have).
SCRIPTED_CASES = (*SCRIPTED_NOT_IDENTICAL, "Spectrogram", "MelSpectrogram", "MFCC", "GriffinLim")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", SCRIPTED_CASES)
def test_torchscript_transforms_run_through_the_op_guard(name: str) -> None:
    """A ``torch.jit.script``ed transform runs torchaudio's original source, so under
    ``bc.apply()`` its complex ops reach the op guard, not this patch: even with the ``cpu``
    strategy the phase vocoder (``TimeStretch``, ``PitchShift``) is not bit-identical to the CPU
    run.  The documented bound: no farther from the float32 CPU result than that result is
    from the same computation in float64.  The magnitude-only transforms stay identical."""
    cases = _scripted_cases()
    assert sorted(cases) == sorted(SCRIPTED_CASES)
    make, run = cases[name]

    def scripted_run(dtype: torch.dtype) -> Any:
        return run(torch.jit.script(make()), dtype)

    want = reference(lambda: scripted_run(torch.float32))
    exact = reference(lambda: scripted_run(torch.float64))
    with bc.emulate("sm_121"), pytest.raises(RuntimeError, match=NVRTC_ERROR):
        scripted_run(torch.float32)  # the scripted code meets the emulated failure unpatched
    with bc.emulate("sm_121"), bc.patched(strategies={PATCH: "cpu"}) as report:
        assert {PATCH, "torch"} <= set(report.applied), str(report)
        got = scripted_run(torch.float32)
    assert got.dtype == want.dtype and got.shape == want.shape
    if name not in SCRIPTED_NOT_IDENTICAL:
        assert_identical(got, want)
        return
    difference = float((got - want).abs().max())
    reference_error = float((want.to(exact.dtype) - exact).abs().max())
    assert difference <= reference_error, (difference, reference_error)


# -- revert, drift, lazy import -----------------------------------------------------------------

TARGETS = {
    "torchaudio.compliance.kaldi": ("fbank", "spectrogram", "mfcc"),
    "torchaudio.functional.functional": ("spectrogram", "griffinlim", "phase_vocoder"),
}


def _snapshot() -> dict[tuple[str, str], tuple[Any, Any, Any, Any]]:
    import importlib

    result = {}
    for module_name, attrs in TARGETS.items():
        module = importlib.import_module(module_name)
        for attr in attrs:
            fn = getattr(module, attr)
            result[(module_name, attr)] = (fn, fn.__code__, fn.__defaults__, fn.__kwdefaults__)
    return result


@pytest.mark.parametrize("strategy", ["real", "cpu"])
def test_revert_restores_every_function_exactly(strategy: str) -> None:
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional as F

    before = _snapshot()
    bc.apply(only=PATCH, force=True, strategies={PATCH: strategy})
    swapped = [key for key, (fn, *_rest) in before.items() if inplace.is_swapped(fn)]
    expected = len(before) if strategy == "cpu" else len(before) - 1  # real: mfcc via fbank
    assert len(swapped) == expected
    assert F.spectrogram is before[("torchaudio.functional.functional", "spectrogram")][0]
    bc.revert()
    after = _snapshot()
    for key, (fn, code, defaults, kwdefaults) in before.items():
        now = after[key]
        assert now[0] is fn and now[1] is code, key
        assert now[2] == defaults and now[3] == kwdefaults, key
        assert not inplace.is_swapped(fn)
    assert kaldi.fbank.__code__.co_name == "fbank"
    with bc.emulate(), pytest.raises(RuntimeError, match=NVRTC_ERROR):
        _fbank_case().run()


def test_drift_check_passes_on_the_installed_torchaudio() -> None:
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional.functional as functional

    from blackwell_compat.patches.torchaudio import TorchaudioPatch

    patch = TorchaudioPatch()
    assert patch.check(kaldi) == []
    assert patch.check(functional) == []


def test_drift_check_reports_what_changed() -> None:
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional.functional as functional

    from blackwell_compat.patches.torchaudio import TorchaudioPatch

    patch = TorchaudioPatch()

    def fixed_fbank(waveform: Any, blackman_coeff: float = 0.42) -> Any:
        return torch.view_as_real(torch.fft.rfft(waveform))  # upstream fixed: no .abs()

    problems = patch.check(module_copy(kaldi, fbank=fixed_fbank))
    assert any("fbank no longer uses abs" in p for p in problems), problems
    assert any("fbank takes (waveform, blackman_coeff)" in p for p in problems), problems

    changed_default = inplace.copy_function(kaldi.fbank)
    defaults = list(changed_default.__defaults__ or ())
    defaults[10] = 40  # num_mel_bins
    changed_default.__defaults__ = tuple(defaults)
    problems = patch.check(module_copy(kaldi, fbank=changed_default))
    assert problems == [
        "torchaudio.compliance.kaldi.fbank: default of num_mel_bins is 40, expected 23"
    ]

    problems = patch.check(module_copy(kaldi, _get_window=None))
    assert problems == ["torchaudio.compliance.kaldi._get_window is missing"]

    def griffinlim(specgram: Any, window: Any) -> Any:
        return specgram

    problems = patch.check(module_copy(functional, griffinlim=griffinlim))
    assert any("griffinlim takes (specgram, window)" in p for p in problems), problems


def test_engine_refuses_a_drifted_target(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional as F

    defaults = list(kaldi.fbank.__defaults__ or ())
    defaults[-1] = "hamming"  # window_type
    monkeypatch.setattr(kaldi.fbank, "__defaults__", tuple(defaults))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = bc.apply(only=PATCH, force=True)
    assert any(issubclass(w.category, BlackwellCompatWarning) for w in caught)
    (entry,) = report.entries
    assert entry.state == "drift", entry
    assert "default of window_type is 'hamming'" in entry.reason
    assert not inplace.is_swapped(kaldi.fbank)  # refused: left alone
    assert inplace.is_swapped(F.spectrogram)  # the other module still checked out and patched


LAZY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import blackwell_compat as bc
    report = bc.apply(only=["torchaudio"], force=True)
    state_before = report.entries[0].state
    assert "torchaudio" not in sys.modules and "torch" not in sys.modules
    import torch
    import torchaudio.compliance.kaldi as kaldi
    from blackwell_compat import inplace
    (status,) = [s for s in bc.status() if s.name == "torchaudio"]
    with bc.emulate():
        out = kaldi.fbank(torch.sin(torch.arange(16000.0) / 7).unsqueeze(0))
    print(json.dumps({"before": state_before, "after": status.state,
                      "swapped": inplace.is_swapped(kaldi.fbank),
                      "sum": float(out.double().sum())}))
    """
)


@pytest.mark.slow
def test_applies_lazily_when_torchaudio_is_imported() -> None:
    import torchaudio.compliance.kaldi as kaldi

    data = run_json_script(LAZY_SCRIPT)
    assert data["before"] == "pending-import"
    assert data["after"] == "applied"
    assert data["swapped"] is True
    expected = float(kaldi.fbank(torch.sin(torch.arange(16000.0) / 7).unsqueeze(0)).double().sum())
    assert data["sum"] == pytest.approx(expected, rel=1e-6)


# -- GPU: CUDA with the patch forced ----------------------------------------------------------

GPU_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    import torch
    import blackwell_compat as bc
    from golden.cases_torchaudio import CASES
    from golden.signals import speechlike
    strategy = sys.argv[2]
    # CPU references first (unpatched), then the same cases on CUDA with the patch forced.
    refs = {name: case.run() for name, case in CASES.items()}
    bc.apply(only=["torchaudio"], force=True, strategies={"torchaudio": strategy})
    torch.set_default_device("cuda")
    results = {}
    for name, case in CASES.items():
        out = case.run().cpu()
        ref = refs[name]
        scale = max(1.0, float(ref.abs().max()))
        wide = torch.complex128 if ref.is_complex() else torch.float64
        diff = float((out.to(wide) - ref.to(wide)).abs().max())
        results[name] = {"max_abs_diff": diff, "scale": scale, "shape_ok": out.shape == ref.shape}
    torch.cuda.synchronize()
    cache = os.environ["PYTORCH_KERNEL_CACHE_PATH"]
    files = sorted(os.listdir(cache)) if os.path.isdir(cache) else []
    print(json.dumps({"results": results, "cache_files": files}))
    """
)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("strategy", ["real", "cpu"])
def test_cuda_matches_cpu_and_compiles_no_jiterator_kernel(strategy: str, tmp_path: Any) -> None:
    data = run_gpu_script(GPU_SCRIPT, tmp_path, strategy)
    assert data["cache_files"] == [], f"Jiterator kernels were compiled: {data['cache_files']}"
    for name, r in data["results"].items():
        assert r["shape_ok"], name
        # cuFFT and the CPU FFT round differently; log features and the 8-iteration
        # Griffin-Lim amplify that: bound relative to the output's magnitude.
        bound = 1e-3 if name in ("griffinlim", "time_stretch_f32") else 1e-4
        assert r["max_abs_diff"] <= bound * r["scale"], (name, r)


# -- the example ------------------------------------------------------------------------------


@pytest.mark.slow
def test_example_runs_offline_and_shows_failure_then_parity() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "torchaudio_features.py"
    result = subprocess.run(
        [sys.executable, str(example), "--random-weights", "--emulate"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "without the patch (emulated sm_121): RuntimeError: nvrtc: error: invalid value" in (
        result.stdout
    )
    assert "with the patch: kaldi fbank (vmap)" in result.stdout
    assert "with the patch: MelSpectrogram" in result.stdout


# -- the emulated CUDA device --------------------------------------------------------------------


def _convolve_grid() -> list[tuple[Any, tuple[int, ...], int, int, str]]:
    import itertools

    import torchaudio.functional as F

    return [
        (fn, lead, n, m, mode)
        for fn in (F.convolve, F.fftconvolve)
        for lead, (n, m), mode in itertools.product(
            [(), (2,), (3, 2)], [(10, 4), (4, 10), (7, 7)], ["full", "valid", "same"]
        )
    ]


def _convolve_all(device: str) -> list[torch.Tensor]:
    results = []
    for fn, lead, n, m, mode in _convolve_grid():
        gen = torch.Generator().manual_seed(n * 100 + m)
        x = torch.randn(*lead, n, generator=gen)
        y = torch.randn(*lead, m, generator=gen)
        results.append(fn(x.to(device), y.to(device), mode=mode).cpu())
    return results


@pytest.mark.parametrize("patched", [False, True], ids=["emulated", "emulated + apply"])
def test_convolve_on_the_emulated_device_has_no_false_alarm(patched: bool) -> None:
    """torchaudio's ``convolve`` multiplies a CPU shape tensor (``torch.tensor(x.shape[:-1])
    .prod()``): a jitted int64 ``prod`` when the CPU plays the GPU, never on a real GPU, where
    that tensor stays on the CPU.  With the emulated CUDA device it stays on the CPU too."""
    import torchaudio.functional as F

    want = reference(lambda: _convolve_all("cpu"))
    with bc.emulate("sm_121"), pytest.raises(RuntimeError, match=NVRTC_ERROR):
        F.convolve(torch.randn(2, 10), torch.randn(2, 4))  # the false alarm of device="cpu"
    with bc.emulate("sm_121", device="cuda"):
        if patched:
            with bc.patched() as report:
                assert {"torch", PATCH} <= set(report.applied), str(report)
                got = _convolve_all("cuda")
        else:
            got = _convolve_all("cuda")
    assert len(got) == len(want) == 54
    for g, w in zip(got, want, strict=True):
        assert_identical(g, w)
