"""The WaveNet gate of the VITS-family TTS models, for tests and benchmarks without Coqui TTS.

Coqui TTS 0.22 (``TTS/tts/layers/generic/wavenet.py``), MeloTTS/OpenVoice, GPT-SoVITS,
Bert-VITS2 and WaveGlow all carry this function under ``@torch.jit.script``: its ``tanh``,
``sigmoid`` and ``mul`` become one fused kernel after the profiling runs.  :func:`gate` is the
same source, unscripted (the eager reference); :func:`scripted_gate` compiles a fresh copy.
The tests against the real package (``tests/test_fused_clients_tts.py``) take the function
from Coqui TTS itself.
"""

from __future__ import annotations

from typing import Any

import torch

from .robotics import fresh

__all__ = ["gate", "gate_inputs", "scripted_gate"]


def gate(input_a: torch.Tensor, input_b: torch.Tensor, n_channels: torch.Tensor) -> torch.Tensor:
    """Coqui TTS 0.22's ``fused_add_tanh_sigmoid_multiply`` (annotations and ``int()`` added)."""
    n_channels_int = int(n_channels[0])
    in_act = input_a + input_b
    t_act = torch.tanh(in_act[:, :n_channels_int, :])
    s_act = torch.sigmoid(in_act[:, n_channels_int:, :])
    acts = t_act * s_act
    return acts


def scripted_gate() -> Any:
    """A freshly scripted copy of :func:`gate` (its own profiling runs and plans)."""
    return torch.jit.script(fresh(gate))


def gate_inputs(
    batch: int, channels: int, frames: int, dtype: torch.dtype = torch.float32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_a, input_b, n_channels)`` as ``WN.forward`` passes them: ``2 * channels``
    rows of conv output and conditioning, and the split point as a one-element IntTensor."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, 2 * channels, frames, generator=gen).to(dtype)
    b = torch.randn(batch, 2 * channels, frames, generator=gen).to(dtype)
    return a, b, torch.IntTensor([channels])
