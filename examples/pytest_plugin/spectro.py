"""The project's code: a power spectrogram written the usual way.

``stft(...).abs()`` takes the magnitude of a complex tensor, which PyTorch computes with a
run-time compiled (Jiterator) kernel on CUDA: on a GPU whose architecture the installed NVRTC
does not know (GB10 sm_121 with NVRTC 12.8, say) it raises
``nvrtc: error: invalid value for --gpu-architecture (-arch)``.
"""

from __future__ import annotations

import torch


def power_spectrogram(signal: torch.Tensor, n_fft: int = 64, hop: int = 16) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=signal.device)
    spec = torch.stft(signal, n_fft, hop_length=hop, window=window, return_complex=True)
    return spec.abs() ** 2


def loudest_bin(signal: torch.Tensor) -> torch.Tensor:
    """Index of the strongest frequency bin of each frame."""
    return power_spectrogram(signal).argmax(dim=-2)
