"""Tests of spectro.py that hold on an affected GPU too (or under --blackwell-emulate)."""

from __future__ import annotations

import math

import pytest
import torch
from spectro import loudest_bin, power_spectrogram


def tone(freq_bin: int, n_fft: int = 64, length: int = 1024) -> torch.Tensor:
    t = torch.arange(length, dtype=torch.float32)
    return torch.sin(2 * math.pi * freq_bin * t / n_fft)


def test_a_pure_tone_peaks_in_its_bin():
    # Plain CPU code: under --blackwell-emulate it fails unless the patches are on.
    assert bool((loudest_bin(tone(5))[1:-1] == 5).all())  # edge frames are padded


def test_power_spectrogram_matches_the_cpu(assert_cpu_parity):
    # Runs on CUDA when present (else on the CPU emulating an affected GPU), with the patches,
    # and compares with the plain CPU result (per-dtype tolerances).
    signal = torch.randn(2, 1024, generator=torch.Generator().manual_seed(0))
    assert_cpu_parity(power_spectrogram, signal)


@pytest.mark.blackwell_compat(patches="torch")
def test_with_only_the_op_guard(blackwell_platform):
    # The op guard alone is applied around this test, and reverted after it.
    spec = power_spectrogram(tone(3))
    assert spec.shape == (33, 65)
    if blackwell_platform.emulated_arch:
        assert blackwell_platform.affected


@pytest.mark.requires_affected_gpu
def test_on_the_affected_gpu(blackwell_patched):
    # Only where a real GPU lacks NVRTC support (skipped elsewhere, with the reason).
    signal = tone(7).cuda()
    with blackwell_patched("torch"):
        assert bool((loudest_bin(signal)[1:-1] == 7).all())
