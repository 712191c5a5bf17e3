"""Seed models in their GPU form on the emulated device (random weights, offline): Kokoro's
``KModel`` and whisper moved with ``model.to("cuda")``, unchanged, fail as on a GB10 without the
library and match the CPU reference with ``bc.apply()``."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from support.models import KOKORO_SHORT, build_kmodel, run_kmodel

import blackwell_compat as bc

pytestmark = pytest.mark.targets


@pytest.mark.slow
def test_kokoro_kmodel_on_cuda_fails_then_matches_cpu_with_apply() -> None:
    pytest.importorskip("kokoro")
    model = build_kmodel()
    reference = run_kmodel(model, KOKORO_SHORT)
    with bc.emulate("sm_121", device="cuda"):
        model.to("cuda")
        assert all(p.is_cuda for p in model.parameters()) and model.device.type == "cuda"
        with pytest.raises(RuntimeError, match="gpu-architecture") as info:
            run_kmodel(model, KOKORO_SHORT)
        assert "complex" in str(info.value)
        bc.apply(only="kokoro")
        try:
            audio = run_kmodel(model, KOKORO_SHORT)
        finally:
            bc.revert()
        model.cpu()
    assert audio.dtype == reference.dtype and audio.shape == reference.shape
    torch.testing.assert_close(audio.cpu(), reference, rtol=1e-4, atol=1e-4)
    assert all(not p.is_cuda for p in model.parameters())


@pytest.mark.slow
def test_whisper_model_to_cuda_fp16_decode_fails_then_matches_cpu_with_apply() -> None:
    whisper = pytest.importorskip("whisper")
    from golden.signals import speechlike
    from support.models_audio import whisper_tiny_random

    model = whisper_tiny_random()
    audio = speechlike(16000 * 2, sample_rate=16000)

    def decode(device: str, fp16: bool) -> Any:
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio.to(device)))
        options = whisper.DecodingOptions(
            fp16=fp16, language="en", without_timestamps=True, sample_len=8
        )
        result = whisper.decode(model, mel, options)
        return result[0] if isinstance(result, list) else result

    reference = decode("cpu", False)
    with bc.emulate("sm_121", device="cuda"):
        model.to("cuda")
        with pytest.raises(RuntimeError, match="gpu-architecture"):
            decode("cuda", True)  # its fp16 GPU path, unchanged
        bc.apply()
        try:
            half = decode("cuda", True)
            full = decode("cuda", False)
        finally:
            bc.revert()
    # fp32 on the device matches the CPU; fp16 (random weights: near-tied logits) runs through.
    assert full.tokens == reference.tokens
    for field in ("avg_logprob", "no_speech_prob"):
        torch.testing.assert_close(
            torch.tensor(getattr(full, field)),
            torch.tensor(getattr(reference, field)),
            equal_nan=True,
            rtol=1e-4,
            atol=1e-5,
        )
    assert len(half.tokens) == len(reference.tokens)
