"""openai-whisper: ``whisper.audio.log_mel_spectrogram`` without complex ``abs``.

``log_mel_spectrogram`` computes ``stft[..., :-1].abs() ** 2``: complex ``abs`` is compiled by
the Jiterator on CUDA, so ``whisper.transcribe`` dies on a GPU whose architecture the installed
NVRTC does not know, before the model runs.  The rewrite computes the power spectrum with
``hypot`` on ``view_as_real`` of the STFT (:func:`blackwell_compat.spectral.power`) and keeps
every other step (:mod:`.log_mel`).  The function is replaced in place, so
``whisper.log_mel_spectrogram`` and the name ``whisper.transcribe`` imported from it run the
rewrite as well.

Only calls whose tensor lands on an affected device (the ``device`` argument, else the audio's
device) take the rewrite; the rest reach whisper's own code.
"""

from __future__ import annotations

from ..toolkit import DeclaredPatch, Expect
from .log_mel import log_mel_rewrite

TARGET = "whisper.audio"
REAL = "real"

__all__ = ["REAL", "WhisperPatch"]


class WhisperPatch(DeclaredPatch):
    name = "whisper"
    summary = "openai-whisper audio.log_mel_spectrogram without complex abs"
    distribution = "openai-whisper"
    supported = ">=20231117"
    requires_affected = True
    strategies = (REAL,)
    docs = "docs/patches/whisper.md"
    declarations = (
        *log_mel_rewrite(
            TARGET,
            filters="mel_filters",
            n_mels=80,
            n_fft=400,
            hop_length=160,
            convert_numpy=True,
            constants=(1e-10, 8.0, 4.0),
        ),
        Expect(TARGET, "N_FFT", value=400),
        Expect(TARGET, "HOP_LENGTH", value=160),
    )
