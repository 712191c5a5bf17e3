"""A tiny stand-in for a third-party audio library (used by blackwell-compat's tests)."""

from __future__ import annotations

from typing import Any


def spectral_energy(signal: Any, n_fft: int = 64) -> Any:
    """Energy per frequency bin: the complex ``abs`` here is a Jiterator kernel on CUDA."""
    import torch

    spectrum = torch.fft.rfft(signal, n=n_fft)
    return spectrum.abs() ** 2
