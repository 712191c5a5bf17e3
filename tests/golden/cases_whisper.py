"""Parity cases for openai-whisper: ``audio.log_mel_spectrogram`` (80 and 128 Mel bins, a NumPy
input, padding) and a tiny random-weight Whisper audio encoder fed with it."""

from __future__ import annotations

from typing import Any

from golden.cases_torchaudio import Case
from golden.signals import speechlike


def _mel(**options: Any) -> Any:
    def run() -> Any:
        import whisper

        return whisper.log_mel_spectrogram(speechlike(16000)[0], **options)

    return run


def _mel_numpy() -> Any:
    from whisper.audio import log_mel_spectrogram

    return log_mel_spectrogram(speechlike(12000)[0].numpy(), 128)


def encoder() -> Any:
    """``embed_audio`` of a tiny random Whisper on 30 s of padded features (what transcribe
    feeds the encoder)."""
    import torch
    import whisper
    from support.models_audio import whisper_tiny_random

    model = whisper_tiny_random()
    mel = whisper.log_mel_spectrogram(speechlike(16000)[0], padding=whisper.audio.N_SAMPLES)
    mel = whisper.pad_or_trim(mel, whisper.audio.N_FRAMES)
    with torch.inference_mode():
        return model.embed_audio(mel.unsqueeze(0))


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("log_mel_80", _mel()),
        Case("log_mel_128_padded", _mel(n_mels=128, padding=1600)),
        Case("log_mel_numpy", _mel_numpy),
        Case("whisper_encoder", encoder),
    )
}
