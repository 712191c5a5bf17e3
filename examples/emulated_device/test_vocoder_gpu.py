"""A GPU test, written for the GPU, that knows nothing of blackwell-compat.

On a CPU-only machine it is skipped; under ``--blackwell-emulate-device=cuda`` it runs on the
emulated CUDA device and fails where a GB10 fails; with ``--blackwell-compat=on`` too it passes.
See docs/emulated-device.md.
"""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def test_vocoder_on_gpu():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 5), torch.nn.SiLU()).to("cuda")
    audio = torch.randn(1, 1, 16000, device="cuda")
    window = torch.hann_window(256, device="cuda")
    with torch.no_grad():
        spec = torch.stft(model(audio)[0, 0], 256, window=window, return_complex=True)
        magnitude = spec.abs()
    assert magnitude.is_cuda and magnitude.shape == (129, 250)
