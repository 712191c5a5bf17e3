"""s3tokenizer (CosyVoice 2's speech tokenizer): ``utils.log_mel_spectrogram`` without complex
``abs``.

``s3tokenizer.utils.log_mel_spectrogram`` is openai-whisper's feature extractor (128 Mel bins by
default) and computes ``stft[..., :-1].abs() ** 2``: complex ``abs`` is compiled by the
Jiterator on CUDA, so tokenizing audio on the GPU dies on an architecture the installed NVRTC
does not know.  The rewrite is the ``whisper`` patch's (:func:`.log_mel.log_mel_rewrite`).  The
function is replaced in place, so the package-level re-export ``s3tokenizer.log_mel_spectrogram``
and any ``from s3tokenizer.utils import log_mel_spectrogram`` made before ``apply()``
(CosyVoice's frontend does this) run the rewrite too.

Chatterbox ships its own copy of this code as a method (``S3Tokenizer.log_mel_spectrogram``);
the ``chatterbox`` patch covers that one.
"""

from __future__ import annotations

from ..toolkit import DeclaredPatch
from .log_mel import log_mel_rewrite

TARGET = "s3tokenizer.utils"
REAL = "real"

__all__ = ["REAL", "S3TokenizerPatch"]


class S3TokenizerPatch(DeclaredPatch):
    name = "s3tokenizer"
    summary = "s3tokenizer utils.log_mel_spectrogram (CosyVoice 2 tokenizer) without complex abs"
    distribution = "s3tokenizer"
    supported = ">=0.2,<0.4"
    requires_affected = True
    strategies = (REAL,)
    docs = "docs/patches/s3tokenizer.md"
    # The STFT size and hop are literals in this function (400 and 160 at 16 kHz).
    declarations = log_mel_rewrite(
        TARGET,
        filters="_mel_filters",
        n_mels=128,
        n_fft=400,
        hop_length=160,
        convert_numpy=False,
        constants=(400, 160, 1e-10, 8.0, 4.0),
    )
