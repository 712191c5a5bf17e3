"""Parity cases for s3tokenizer (CosyVoice 2's tokenizer): ``log_mel_spectrogram`` and a
random-weight ``S3TokenizerV2`` fed with it."""

from __future__ import annotations

from typing import Any

from golden.cases_torchaudio import Case
from golden.signals import speechlike


def _mel(**options: Any) -> Any:
    def run() -> Any:
        import s3tokenizer

        return s3tokenizer.log_mel_spectrogram(speechlike(16000)[0], **options)

    return run


def _mel_batched() -> Any:
    from s3tokenizer.utils import log_mel_spectrogram

    audio = speechlike(12000, channels=2)
    return log_mel_spectrogram(audio, n_mels=128)


def tokens() -> Any:
    """Mel features of two utterances, then the tokenizer's codes (int64)."""
    import s3tokenizer
    import torch
    from support.models_audio import s3tokenizer_v2

    model = s3tokenizer_v2()
    mels = [
        s3tokenizer.log_mel_spectrogram(speechlike(n, seed=i)[0])
        for i, n in ((0, 16000), (1, 12000))
    ]
    mel, mel_len = s3tokenizer.padding(mels)
    with torch.inference_mode():
        codes, code_len = model.quantize(mel, mel_len)
    return torch.cat([codes.flatten(), code_len])


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("log_mel_128", _mel()),
        Case("log_mel_80_padded", _mel(n_mels=80, padding=480)),
        Case("log_mel_batched", _mel_batched),
        Case("s3tokenizer_v2_tokens", tokens),
    )
}
