"""Parity cases for the ``chatterbox`` patch.

- ``S3Tokenizer`` (speech_tokenizer_v2_25hz, random weights): ``log_mel_spectrogram`` with and
  without right padding, and the speech tokens of a full ``forward``;
- the CAMPPlus speaker encoder (random weights): ``extract_feature`` (kaldi fbank of two
  utterances, padded) and the embedding of ``inference``;
- the resemble-perth implicit watermarker with the weights its wheel ships: the watermarked
  signal (at the watermarker's own 32 kHz, so that no resampling is involved).

Models are built once per process from fixed seeds; inputs are :mod:`golden.signals`.
"""

from __future__ import annotations

import functools
from typing import Any

from golden.cases_torchaudio import Case
from golden.signals import speechlike

S3_RATE = 16000
PERTH_RATE = 32000


@functools.cache
def s3tokenizer() -> Any:
    from support.models import build_s3tokenizer

    return build_s3tokenizer(seed=0)


@functools.cache
def campplus() -> Any:
    from support.models import build_campplus

    return build_campplus(seed=0)


@functools.cache
def watermarker() -> Any:
    from support.models import build_perth_watermarker

    return build_perth_watermarker()


def s3_log_mel() -> Any:
    return s3tokenizer().log_mel_spectrogram(speechlike(2 * S3_RATE))


def s3_log_mel_padded() -> Any:
    return s3tokenizer().log_mel_spectrogram(speechlike(S3_RATE, seed=1), padding=480)


def s3_tokens() -> Any:
    import torch

    waves = [speechlike(2 * S3_RATE)[0], speechlike(S3_RATE, seed=1)[0]]
    codes, lengths = s3tokenizer()(waves)
    return torch.cat([codes.flatten(), lengths])


def _utterances() -> list[Any]:
    return [speechlike(2 * S3_RATE, seed=2)[0], speechlike(S3_RATE, seed=3)[0]]


def campplus_fbank() -> Any:
    from chatterbox.models.s3gen.xvector import extract_feature

    features, _lengths, _times = extract_feature(_utterances())
    return features


def campplus_embedding() -> Any:
    import torch

    with torch.no_grad():
        return campplus().inference(_utterances())


def perth_watermarked() -> Any:
    import torch

    signal = speechlike(PERTH_RATE // 2, sample_rate=PERTH_RATE)[0].numpy()
    return torch.from_numpy(watermarker().apply_watermark(signal, sample_rate=PERTH_RATE))


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("s3_log_mel", s3_log_mel),
        Case("s3_log_mel_padded", s3_log_mel_padded),
        Case("s3_tokens", s3_tokens),
        Case("campplus_fbank", campplus_fbank),
        Case("campplus_embedding", campplus_embedding),
        Case("perth_watermarked", perth_watermarked),
    )
}
