"""The ``whisper`` patch: openai-whisper's ``audio.log_mel_spectrogram`` and a tiny random-weight
Whisper encoder fed with it.

(1) reference on the CPU unpatched, (2) failure under emulation unpatched, (3) parity under
emulation with only this patch (float32 ``assert_close`` defaults), plus the goldens.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import torch
from support.audio_parity import NVRTC_ERROR, cuda_available, reference
from support.patch_suite import GoldenParity, lazy_apply_states, module_copy, run_gpu_script

import blackwell_compat as bc
from blackwell_compat import inplace

pytestmark = pytest.mark.targets

PATCH = "whisper"


class TestGoldenParity(GoldenParity):
    PATCH = PATCH
    CASES_MODULE = "golden.cases_whisper"
    CASE_NAMES = ("log_mel_80", "log_mel_128_padded", "log_mel_numpy", "whisper_encoder")


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
    changed = module_copy(audio, N_FFT=512, mel_filters=lambda device, n_mels, sample_rate: None)
    problems = patch.check(changed)
    assert "whisper.audio.N_FFT is 512, expected 400" in problems
    assert any("mel_filters takes (device, n_mels, sample_rate)" in p for p in problems), problems


@pytest.mark.slow
def test_applies_lazily_on_import() -> None:
    states = lazy_apply_states(PATCH, "whisper", "log_mel_spectrogram")
    assert states == ["pending-import", "applied", True]


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
    data = run_gpu_script(GPU, tmp_path)
    assert data["device"].startswith("cuda") and data["cache"] == []
    assert data["diff"] <= 1e-4  # cuFFT vs CPU FFT rounding, after log10
