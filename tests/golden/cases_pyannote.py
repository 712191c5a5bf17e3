"""Parity cases for pyannote.audio 4 (WhisperX diarization): the WeSpeaker ResNet34 embedding,
whose fbank features go through ``torch.vmap(partial(kaldi.fbank, ...))``."""

from __future__ import annotations

from typing import Any

from golden.cases_torchaudio import Case
from golden.signals import speechlike


def batch(seconds: float = 2.0, items: int = 2) -> Any:
    """``(items, 1, samples)`` waveforms, as pyannote feeds its embedding model."""
    import torch

    return torch.stack([speechlike(int(16000 * seconds), seed=i) for i in range(items)])


def embedding_of(model: Any, waveforms: Any) -> Any:
    import torch

    with torch.inference_mode():
        return model(waveforms)


def fbank_of(model: Any, waveforms: Any) -> Any:
    import torch

    with torch.inference_mode():
        return model.compute_fbank(waveforms)


def _embedding() -> Any:
    from support.models_audio import wespeaker_resnet34

    return embedding_of(wespeaker_resnet34(), batch())


def _fbank() -> Any:
    from support.models_audio import wespeaker_resnet34

    return fbank_of(wespeaker_resnet34(), batch())


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("wespeaker_resnet34_embedding", _embedding),
        Case("wespeaker_resnet34_fbank", _fbank),
    )
}
