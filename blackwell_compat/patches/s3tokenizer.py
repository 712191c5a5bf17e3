"""s3tokenizer (CosyVoice 2's speech tokenizer): ``utils.log_mel_spectrogram`` without complex
``abs``.

``s3tokenizer.utils.log_mel_spectrogram`` is openai-whisper's feature extractor (128 Mel bins by
default) and computes ``stft[..., :-1].abs() ** 2``: complex ``abs`` is compiled by the
Jiterator on CUDA, so tokenizing audio on the GPU dies on an architecture the installed NVRTC
does not know.  The rewrite computes the power spectrum with ``hypot`` on ``view_as_real`` of
the STFT (:func:`blackwell_compat.spectral.power`) and keeps every other step.  The function is
replaced in place, so the package-level re-export ``s3tokenizer.log_mel_spectrogram`` and any
``from s3tokenizer.utils import log_mel_spectrogram`` made before ``apply()`` (CosyVoice's
frontend does this) run the rewrite too.

Chatterbox ships its own copy of this code as a method (``S3Tokenizer.log_mel_spectrogram``);
the ``chatterbox`` patch covers that one.
"""

from __future__ import annotations

import types

from ..registry import Patch, PatchContext
from ._common import LogMelRouter, log_mel_problems

TARGET = "s3tokenizer.utils"
REAL = "real"

__all__ = ["REAL", "S3TokenizerPatch"]


def _signature(audio: object, n_mels: int = 128, padding: int = 0, device: object = None) -> None:
    """Parameters of ``s3tokenizer.utils.log_mel_spectrogram``."""


class S3TokenizerPatch(Patch):
    name = "s3tokenizer"
    summary = "s3tokenizer utils.log_mel_spectrogram (CosyVoice 2 tokenizer) without complex abs"
    distribution = "s3tokenizer"
    supported = ">=0.2,<0.4"
    modules = (TARGET,)
    requires_affected = True
    strategies = (REAL,)
    docs = "docs/patches/s3tokenizer.md"

    def check(self, module: types.ModuleType) -> list[str]:
        # The STFT size and hop are literals in this function (400 and 160 at 16 kHz).
        return log_mel_problems(
            module,
            where=TARGET,
            filters="_mel_filters",
            signature=_signature,
            constants=(400, 160, 1e-10, 8.0, 4.0),
        )

    def apply(self, module: types.ModuleType, ctx: PatchContext) -> None:
        LogMelRouter(
            module,
            filters=module._mel_filters,
            n_fft=400,
            hop_length=160,
            default_n_mels=128,
            convert_numpy=False,
        ).install(ctx, module, "log_mel_spectrogram")
