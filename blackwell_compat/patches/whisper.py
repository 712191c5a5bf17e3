"""openai-whisper: ``whisper.audio.log_mel_spectrogram`` without complex ``abs``.

``log_mel_spectrogram`` computes ``stft[..., :-1].abs() ** 2``: complex ``abs`` is compiled by
the Jiterator on CUDA, so ``whisper.transcribe`` dies on a GPU whose architecture the installed
NVRTC does not know, before the model runs.  The rewrite computes the power spectrum with
``hypot`` on ``view_as_real`` of the STFT (:func:`blackwell_compat.spectral.power`) and keeps
every other step.  The function is replaced in place, so ``whisper.log_mel_spectrogram`` and the
name ``whisper.transcribe`` imported from it run the rewrite as well.

Only calls whose tensor lands on an affected device (the ``device`` argument, else the audio's
device) take the rewrite; the rest reach whisper's own code.  :func:`log_mel_rewrite` declares
the same rewrite for any copy of whisper's feature extractor (the ``s3tokenizer`` patch).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from .. import spectral
from ..toolkit import DeclaredPatch, Expect, Rewrite

TARGET = "whisper.audio"
REAL = "real"

__all__ = ["REAL", "WhisperPatch", "log_mel_rewrite", "whisper_log_mel"]


def whisper_log_mel(
    audio: Any, filters: Any, *, n_fft: int, hop_length: int, padding: int = 0
) -> Any:
    """``log10`` Mel spectrogram as openai-whisper computes it, without complex ``abs``.

    *audio* is a tensor already on the target device; *filters* the ``(n_mels, n_fft//2+1)``
    Mel matrix on that device.  Steps (each as in whisper's ``audio.log_mel_spectrogram``):
    right zero-padding, periodic Hann window, STFT, power of every frame but the last, Mel
    projection, ``log10`` clamped at 1e-10, dynamic range limited to 8 (i.e. 80 dB) below the
    maximum, then ``(x + 4) / 4``.
    """
    import torch

    if padding > 0:
        audio = torch.nn.functional.pad(audio, (0, padding))
    window = torch.hann_window(n_fft).to(audio.device)
    stft = torch.stft(audio, n_fft, hop_length, window=window, return_complex=True)
    power = spectral.power(stft[..., :-1])
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def log_mel_rewrite(
    module: str,
    *,
    filters: str,
    n_mels: int,
    n_fft: int,
    hop_length: int,
    convert_numpy: bool,
    constants: tuple[Any, ...],
) -> tuple[Rewrite | Expect, ...]:
    """Declarations for an openai-whisper style ``module.log_mel_spectrogram(audio, n_mels,
    padding, device)``: the routed rewrite and its drift expectations.

    The deciding device is the ``device`` argument, else the audio's; a path is loaded with the
    module's ``load_audio`` (on the CPU), NumPy input is converted only if *convert_numpy*
    (else such calls go to the original).  *filters* names the module's Mel filter function
    ``(device, n_mels)``; *constants* are literals the function body must still contain.
    """

    def deciding(audio: Any, n_mels: int = n_mels, padding: int = 0, device: Any = None) -> Any:
        import torch

        if not (torch.is_tensor(audio) or isinstance(audio, str) or convert_numpy):
            return None  # the original's own business (it converts or refuses it)
        if device is not None:
            return torch.device(device)
        return audio if torch.is_tensor(audio) else torch.device("cpu")  # loaded on the CPU

    def build(target: types.ModuleType, original: Callable[..., Any]) -> Callable[..., Any]:
        def log_mel_spectrogram(
            audio: Any, n_mels: int = n_mels, padding: int = 0, device: Any = None
        ) -> Any:
            import torch

            if isinstance(audio, str):
                audio = target.load_audio(audio)
            if not torch.is_tensor(audio):
                audio = torch.from_numpy(audio)
            if device is not None:
                audio = audio.to(device)
            mel = getattr(target, filters)(audio.device, n_mels)
            return whisper_log_mel(audio, mel, n_fft=n_fft, hop_length=hop_length, padding=padding)

        return log_mel_spectrogram

    def signature(audio: Any, n_mels: int = n_mels, padding: int = 0, device: Any = None) -> None:
        """Parameters of the target."""

    return (
        Rewrite(
            module,
            "log_mel_spectrogram",
            build=build,
            on=deciding,
            names=("stft", "abs", filters, "hann_window", "log10", "load_audio"),
            signature=signature,
            constants=constants,
        ),
        Expect(module, filters, params=("device", "n_mels")),
        Expect(module, "load_audio"),
    )


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
