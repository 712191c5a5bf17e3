"""The unscripted control: coqui-tts 0.28's VITS posterior encoder (tests-full).

coqui-tts 0.28 dropped ``@torch.jit.script`` from the WaveNet gate
(``TTS/tts/layers/generic/wavenet.py``), so the same encoder that fails under emulation with
Coqui TTS 0.22 (``test_fused_clients_tts.py``) must run here without any rung: no false alarm
from the fused-kernel emulation, and the outputs are those outside emulation, bit for bit.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat import fused_kernels, state

pytestmark = [pytest.mark.targets, pytest.mark.slow]


def _encoder_and_inputs() -> tuple[Any, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    from TTS.tts.layers.vits.networks import PosteriorEncoder

    torch.manual_seed(0)
    encoder = PosteriorEncoder(24, 8, 16, 5, 1, 4, cond_channels=6).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 24, 40, generator=gen)
    g = torch.randn(3, 6, 1, generator=gen)
    return encoder, (x, torch.tensor([40, 23, 1]), g)


def _passes(encoder: Any, inputs: tuple[torch.Tensor, ...], calls: int) -> tuple[Any, ...]:
    x, lengths, g = inputs
    with torch.no_grad():
        for _ in range(calls):
            torch.manual_seed(2)
            out = encoder(x, lengths, g=g)
    return tuple(out)


def test_the_gate_is_not_scripted_in_coqui_tts_028() -> None:
    from TTS.tts.layers.generic import wavenet

    assert not isinstance(wavenet.fused_add_tanh_sigmoid_multiply, torch.jit.ScriptFunction)


def test_the_same_encoder_runs_under_emulation_without_any_rung() -> None:
    encoder, inputs = _encoder_and_inputs()
    reference = _passes(encoder, inputs, 1)
    try:
        with bc.emulate("sm_121"):
            assert fused_kernels.installed()  # the emulation watches scripted calls
            got = _passes(encoder, inputs, 4)
    finally:
        state.reset_for_tests()
    for g, w in zip(got, reference, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape and g.stride() == w.stride()
        assert torch.equal(g, w)
