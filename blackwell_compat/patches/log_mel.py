"""The openai-whisper style log-Mel spectrogram without complex ``abs``, as a declaration.

openai-whisper's ``audio.log_mel_spectrogram`` is copied by other libraries (s3tokenizer, the
CosyVoice 2 tokenizer); each computes ``stft[..., :-1].abs() ** 2``, and complex ``abs`` is
compiled by the Jiterator on CUDA.  :func:`log_mel_rewrite` declares the routed rewrite and its
drift expectations for one such module; the ``whisper`` and ``s3tokenizer`` patches are that
declaration with their own constants.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from .. import spectral
from ..toolkit import Expect, Rewrite

__all__ = ["log_mel_rewrite", "whisper_log_mel"]


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
            Expect(
                module,
                "log_mel_spectrogram",
                names=("stft", "abs", filters, "hann_window", "log10", "load_audio"),
                signature=signature,
                constants=constants,
            ),
            build=build,
            on=deciding,
        ),
        Expect(module, filters, params=("device", "n_mels")),
        Expect(module, "load_audio"),
    )
