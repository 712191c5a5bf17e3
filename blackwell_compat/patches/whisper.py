"""openai-whisper: ``whisper.audio.log_mel_spectrogram`` without complex ``abs``.

``log_mel_spectrogram`` computes ``stft[..., :-1].abs() ** 2``: complex ``abs`` is compiled by
the Jiterator on CUDA, so ``whisper.transcribe`` dies on a GPU whose architecture the installed
NVRTC does not know, before the model runs.  The rewrite computes the power spectrum with
``hypot`` on ``view_as_real`` of the STFT (:func:`blackwell_compat.spectral.power`) and keeps
every other step.  The function is replaced in place, so ``whisper.log_mel_spectrogram`` and the
name ``whisper.transcribe`` imported from it run the rewrite as well.

Only calls whose tensor lands on an affected device (the ``device`` argument, else the audio's
device) take the rewrite; the rest reach whisper's own code.
"""

from __future__ import annotations

import types

from ..registry import Patch, PatchContext
from ._common import LogMelRouter, log_mel_problems

TARGET = "whisper.audio"
REAL = "real"

__all__ = ["REAL", "WhisperPatch"]


def _signature(audio: object, n_mels: int = 80, padding: int = 0, device: object = None) -> None:
    """Parameters of ``whisper.audio.log_mel_spectrogram``."""


class WhisperPatch(Patch):
    name = "whisper"
    summary = "openai-whisper audio.log_mel_spectrogram without complex abs"
    distribution = "openai-whisper"
    supported = ">=20231117"
    modules = (TARGET,)
    requires_affected = True
    strategies = (REAL,)
    docs = "docs/patches/whisper.md"

    def check(self, module: types.ModuleType) -> list[str]:
        problems = log_mel_problems(
            module,
            where=TARGET,
            filters="mel_filters",
            signature=_signature,
            constants=(1e-10, 8.0, 4.0),
        )
        for const, value in (("N_FFT", 400), ("HOP_LENGTH", 160)):
            if getattr(module, const, None) != value:
                problems.append(
                    f"{TARGET}.{const} is {getattr(module, const, None)!r}, expected {value}"
                )
        return problems

    def apply(self, module: types.ModuleType, ctx: PatchContext) -> None:
        LogMelRouter(
            module,
            filters=module.mel_filters,
            n_fft=module.N_FFT,
            hop_length=module.HOP_LENGTH,
            default_n_mels=80,
            convert_numpy=True,
        ).install(ctx, module, "log_mel_spectrogram")
