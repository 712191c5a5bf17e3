"""The ``whisper`` patch: openai-whisper's ``audio.log_mel_spectrogram`` and a tiny random-weight
Whisper encoder fed with it.

(1) reference on the CPU unpatched, (2) failure under emulation unpatched, (3) parity under
emulation with only this patch (float32 ``assert_close`` defaults), plus the goldens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from typing import Any

import pytest
import torch
from golden import store
from support.audio_parity import (
    NVRTC_ERROR,
    assert_fails_unpatched,
    cuda_available,
    empty_kernel_cache_env,
    patched_run,
    reference,
)

import blackwell_compat as bc
from blackwell_compat import engine, inplace

pytestmark = pytest.mark.targets

PATCH = "whisper"
CASE_NAMES = ["log_mel_80", "log_mel_128_padded", "log_mel_numpy", "whisper_encoder"]


def _cases() -> dict[str, Any]:
    from golden.cases_whisper import CASES

    return CASES


@pytest.fixture(scope="module")
def references() -> dict[str, Any]:
    engine._reset_for_tests()
    return {name: reference(case.run) for name, case in _cases().items()}


def test_case_list_matches_the_golden_registry() -> None:
    assert sorted(CASE_NAMES) == sorted(_cases()) == sorted(store.load(PATCH)["cases"])


@pytest.mark.parametrize("name", CASE_NAMES)
def test_reference_matches_golden(name: str, references: dict[str, Any]) -> None:
    store.assert_matches_golden(PATCH, name, references[name])


@pytest.mark.parametrize("name", CASE_NAMES)
def test_unpatched_fails_under_emulation(name: str) -> None:
    assert_fails_unpatched(_cases()[name].run)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_patched_matches_reference(name: str, references: dict[str, Any]) -> None:
    out = patched_run(_cases()[name].run, PATCH)
    torch.testing.assert_close(out, references[name])
    store.assert_matches_golden(PATCH, name, out)


def test_name_imported_by_transcribe_is_covered() -> None:
    """``whisper.transcribe`` imported ``log_mel_spectrogram`` by name at import time."""
    import importlib

    from golden.signals import speechlike

    # whisper/__init__ rebinds the name ``transcribe`` to the function: get the module itself.
    transcribe = importlib.import_module("whisper.transcribe")

    audio = speechlike(8000)[0]
    expected = reference(lambda: transcribe.log_mel_spectrogram(audio))
    with bc.emulate(), bc.patched(only=PATCH):
        torch.testing.assert_close(transcribe.log_mel_spectrogram(audio), expected)


def test_revert_restores_the_function() -> None:
    import whisper.audio as audio

    fn = audio.log_mel_spectrogram
    code = fn.__code__
    bc.apply(only=PATCH, force=True)
    assert inplace.is_swapped(fn)
    bc.revert()
    assert audio.log_mel_spectrogram is fn and fn.__code__ is code and not inplace.is_swapped(fn)
    with bc.emulate(), pytest.raises(RuntimeError, match=NVRTC_ERROR):
        fn(torch.zeros(1600))


def test_drift_check() -> None:
    import whisper.audio as audio

    from blackwell_compat.patches.whisper import WhisperPatch

    patch = WhisperPatch()
    assert patch.check(audio) == []
    copy = types.ModuleType(audio.__name__)
    copy.__dict__.update({k: v for k, v in vars(audio).items() if not k.startswith("__")})
    copy.N_FFT = 512  # type: ignore[attr-defined]
    copy.mel_filters = lambda device, n_mels, sample_rate: None  # type: ignore[attr-defined]
    problems = patch.check(copy)
    assert "whisper.audio.N_FFT is 512, expected 400" in problems
    assert any("mel_filters takes (device, n_mels, sample_rate)" in p for p in problems), problems


LAZY = textwrap.dedent(
    """
    import json, sys
    import blackwell_compat as bc
    state = bc.apply(only=["whisper"], force=True).entries[0].state
    assert "whisper" not in sys.modules
    import whisper
    from blackwell_compat import inplace
    (status,) = [s for s in bc.status() if s.name == "whisper"]
    print(json.dumps([state, status.state, inplace.is_swapped(whisper.log_mel_spectrogram)]))
    """
)


@pytest.mark.slow
def test_applies_lazily_on_import() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAZY], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["pending-import", "applied", True]


GPU = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    import torch, whisper
    import blackwell_compat as bc
    from golden.signals import speechlike
    audio = speechlike(16000)[0]
    ref = whisper.log_mel_spectrogram(audio)
    bc.apply(only=["whisper"], force=True)
    out = whisper.log_mel_spectrogram(audio, device="cuda")
    torch.cuda.synchronize()
    cache = os.environ["PYTORCH_KERNEL_CACHE_PATH"]
    print(json.dumps({"diff": float((out.cpu() - ref).abs().max()), "device": str(out.device),
                      "cache": sorted(os.listdir(cache))}))
    """
)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_compiles_no_jiterator_kernel(tmp_path: Any) -> None:
    from pathlib import Path

    cache = tmp_path / "kernels"
    cache.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", GPU, str(Path(__file__).resolve().parent)],
        capture_output=True, text=True, timeout=600, env=empty_kernel_cache_env(str(cache)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["device"].startswith("cuda") and data["cache"] == []
    assert data["diff"] <= 1e-4  # cuFFT vs CPU FFT rounding, after log10
