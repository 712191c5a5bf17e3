"""The ``s3tokenizer`` patch: ``s3tokenizer.utils.log_mel_spectrogram`` (CosyVoice 2's tokenizer
front end) and a random-weight ``S3TokenizerV2`` fed with it.

(1) reference on the CPU unpatched, (2) failure under emulation unpatched, (3) parity under
emulation with only this patch (float32 ``assert_close`` defaults; token ids exactly), plus the
goldens.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import torch
from support.audio_parity import NVRTC_ERROR, assert_identical, cuda_available, reference
from support.patch_suite import GoldenParity, lazy_apply_states, module_copy, run_gpu_script

import blackwell_compat as bc
from blackwell_compat import inplace

pytestmark = pytest.mark.targets

PATCH = "s3tokenizer"


class TestGoldenParity(GoldenParity):
    PATCH = PATCH
    CASES_MODULE = "golden.cases_s3tokenizer"
    CASE_NAMES = ("log_mel_128", "log_mel_80_padded", "log_mel_batched", "s3tokenizer_v2_tokens")

    def compare(self, out: Any, ref: Any) -> None:
        if out.is_floating_point():
            torch.testing.assert_close(out, ref)
        else:
            assert_identical(out, ref)  # token ids

    def test_device_argument_decides(self, references: dict[str, Any]) -> None:
        """device='cpu' under emulation is the affected device; outside emulation it is not."""
        import s3tokenizer
        from golden.signals import speechlike

        audio = speechlike(16000)[0]
        with bc.patched(only=PATCH, force=True):
            assert_identical(
                s3tokenizer.log_mel_spectrogram(audio, device="cpu"), references["log_mel_128"]
            )
            with bc.emulate():
                torch.testing.assert_close(
                    s3tokenizer.log_mel_spectrogram(audio, device="cpu"), references["log_mel_128"]
                )


def test_reexport_and_early_imports_are_covered() -> None:
    """``s3tokenizer.log_mel_spectrogram`` and ``from s3tokenizer.utils import ...`` made before
    apply() are the same function object, changed in place."""
    import s3tokenizer
    from golden.signals import speechlike
    from s3tokenizer.utils import log_mel_spectrogram as early

    audio = speechlike(8000)[0]
    expected = reference(lambda: early(audio))
    with bc.emulate(), bc.patched(only=PATCH):
        assert s3tokenizer.log_mel_spectrogram is early
        torch.testing.assert_close(early(audio), expected)


def test_errors_stay_those_of_s3tokenizer() -> None:
    import s3tokenizer

    audio = torch.zeros(1600)
    with pytest.raises(AssertionError, match="Unsupported n_mels"):
        s3tokenizer.log_mel_spectrogram(audio, n_mels=64)
    with (
        bc.emulate(),
        bc.patched(only=PATCH),
        pytest.raises(AssertionError, match="Unsupported n_mels"),
    ):
        s3tokenizer.log_mel_spectrogram(audio, n_mels=64)


def test_revert_restores_the_function() -> None:
    import s3tokenizer.utils as utils

    fn = utils.log_mel_spectrogram
    code, defaults = fn.__code__, fn.__defaults__
    bc.apply(only=PATCH, force=True)
    assert inplace.is_swapped(fn)
    bc.revert()
    assert utils.log_mel_spectrogram is fn and fn.__code__ is code and fn.__defaults__ == defaults
    assert not inplace.is_swapped(fn)
    with bc.emulate(), pytest.raises(RuntimeError, match=NVRTC_ERROR):
        fn(torch.zeros(1600))


def test_drift_check() -> None:
    import s3tokenizer.utils as utils

    from blackwell_compat.patches.s3tokenizer import S3TokenizerPatch

    patch = S3TokenizerPatch()
    assert patch.check(utils) == []

    def changed(audio: Any, n_mels: int = 80, padding: int = 0, device: Any = None) -> Any:
        return torch.stft(audio, 512, 128, return_complex=True).abs()

    problems = patch.check(module_copy(utils, log_mel_spectrogram=changed))
    assert any("default of n_mels is 80, expected 128" in p for p in problems), problems
    assert any("no longer uses the constant(s) 400, 160" in p for p in problems), problems


@pytest.mark.slow
def test_applies_lazily_on_import() -> None:
    states = lazy_apply_states(PATCH, "s3tokenizer", "log_mel_spectrogram")
    assert states == ["pending-import", "applied", True]


GPU = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    import torch, s3tokenizer
    import blackwell_compat as bc
    from golden.signals import speechlike
    from support.models_audio import s3tokenizer_v2
    audio = speechlike(16000)[0]
    ref = s3tokenizer.log_mel_spectrogram(audio)
    model = s3tokenizer_v2()
    with torch.inference_mode():
        ref_codes = model.quantize(ref.unsqueeze(0), torch.tensor([ref.shape[-1]]))[0]
    bc.apply(only=["s3tokenizer"], force=True)
    out = s3tokenizer.log_mel_spectrogram(audio, device="cuda")
    model = model.cuda()
    with torch.inference_mode():
        codes = model.quantize(out.unsqueeze(0), torch.tensor([out.shape[-1]], device="cuda"))[0]
    torch.cuda.synchronize()
    cache = os.environ["PYTORCH_KERNEL_CACHE_PATH"]
    print(json.dumps({"diff": float((out.cpu() - ref).abs().max()), "device": str(out.device),
                      "codes_equal_fraction": float((codes.cpu() == ref_codes).float().mean()),
                      "cache": sorted(os.listdir(cache))}))
    """
)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_compiles_no_jiterator_kernel(tmp_path: Any) -> None:
    data = run_gpu_script(GPU, tmp_path)
    assert data["device"].startswith("cuda")
    assert data["cache"] == []
    # cuFFT vs the CPU FFT: log10 features differ by float rounding only.
    assert data["diff"] <= 1e-4
    # Random-weight codes sit on rounding boundaries of the FSQ quantizer; nearly all agree.
    assert data["codes_equal_fraction"] >= 0.9
