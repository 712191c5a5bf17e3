"""Offline, random-weight builders for the part-A parity tests (pyannote, s3tokenizer, whisper).

Nothing downloads: each model is built from its constructor with small sizes where the public
ones would make the tests slow, after seeding torch, so one torch build always gives the same
weights.  Target libraries are imported inside the functions.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # pyannote sends telemetry otherwise


def wespeaker_resnet34(seed: int = 0) -> Any:
    """pyannote.audio's WeSpeaker ResNet34 speaker embedding (the WhisperX diarization
    embedding), published architecture, random weights, in eval mode.

    Its ``__init__`` stores ``functools.partial(torchaudio.compliance.kaldi.fbank, ...)``, which
    ``compute_fbank`` calls under ``torch.vmap``: the call site the torchaudio patch must reach
    even when the model was built before ``apply()``.
    """
    import torch
    from pyannote.audio.models.embedding.wespeaker import WeSpeakerResNet34

    torch.manual_seed(seed)
    model = WeSpeakerResNet34()
    model.eval()
    return model


def s3tokenizer_v2(seed: int = 0) -> Any:
    """CosyVoice 2's ``S3TokenizerV2`` with a reduced encoder (2 layers of width 256 instead of
    6 x 1280), random weights: the same code path at a fraction of the cost."""
    import torch
    from s3tokenizer.model_v2 import ModelConfig, S3TokenizerV2

    torch.manual_seed(seed)
    config = ModelConfig(n_mels=128, n_audio_state=256, n_audio_head=4, n_audio_layer=2)
    model = S3TokenizerV2("speech_tokenizer_v2_25hz", config=config)
    model.eval()
    return model


def whisper_tiny_random(seed: int = 0) -> Any:
    """An openai-whisper ``Whisper`` model with tiny dimensions and random weights (80 Mel bins,
    the fixed 30 s / 1500-frame audio context)."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    dims = ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=2,
        n_audio_layer=2,
        n_vocab=51865,
        n_text_ctx=448,
        n_text_state=64,
        n_text_head=2,
        n_text_layer=2,
    )
    model = Whisper(dims)
    model.eval()
    return model
