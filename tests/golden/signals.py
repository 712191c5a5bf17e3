"""Deterministic test signals (no random generator: identical on every torch version)."""

from __future__ import annotations

import math
from typing import Any


def speechlike(
    num_samples: int, *, sample_rate: int = 16000, seed: int = 0, channels: int = 1
) -> Any:
    """A float32 ``(channels, num_samples)`` signal: a harmonic tone with vibrato, a chirp and
    a little hashed noise, amplitude below 1.  Built in float64 from closed formulas."""
    import torch

    t = torch.arange(num_samples, dtype=torch.float64) / sample_rate
    rows = []
    for ch in range(channels):
        k = seed * 7 + ch
        f0 = 140.0 + 20.0 * k
        vibrato = 2 * math.pi * f0 * t + 0.8 * torch.sin(2 * math.pi * 5.0 * t)
        voice = sum(0.4 / h * torch.sin(h * vibrato) for h in range(1, 6))
        chirp = 0.2 * torch.sin(2 * math.pi * (300.0 + 1500.0 * t) * t)
        index = torch.arange(num_samples, dtype=torch.float64) + 7919.0 * (k + 1)
        noise = torch.frac(torch.sin(index * 12.9898) * 43758.5453) - 0.5
        envelope = 0.6 + 0.4 * torch.sin(2 * math.pi * 1.5 * t) ** 2
        rows.append(envelope * (voice + chirp) + 0.05 * noise)
    return torch.stack(rows).to(torch.float32)
