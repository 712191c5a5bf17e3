"""The ``s3tokenizer`` patch: ``s3tokenizer.utils.log_mel_spectrogram`` (CosyVoice 2's tokenizer
front end) and a random-weight ``S3TokenizerV2`` fed with it.

(1) reference on the CPU unpatched, (2) failure under emulation unpatched, (3) parity under
emulation with only this patch (float32 ``assert_close`` defaults; token ids exactly), plus the
goldens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from typing import Any

import pytest
import torch
from golden import store
from support.audio_parity import (
    NVRTC_ERROR,
    assert_fails_unpatched,
    assert_identical,
    cuda_available,
    empty_kernel_cache_env,
    patched_run,
    reference,
)

import blackwell_compat as bc
from blackwell_compat import engine, inplace

pytestmark = pytest.mark.targets

PATCH = "s3tokenizer"
CASE_NAMES = ["log_mel_128", "log_mel_80_padded", "log_mel_batched", "s3tokenizer_v2_tokens"]


def _cases() -> dict[str, Any]:
    from golden.cases_s3tokenizer import CASES

    return CASES


@pytest.fixture(scope="module")
def references() -> dict[str, Any]:
    engine._reset_for_tests()
    return {name: reference(case.run) for name, case in _cases().items()}


def test_case_list_matches_the_golden_registry() -> None:
    assert sorted(CASE_NAMES) == sorted(_cases()) == sorted(store.load(PATCH)["cases"])


@pytest.mark.parametrize("name", CASE_NAMES)
def test_reference_matches_golden(name: str, references: dict[str, Any]) -> None:
    store.assert_matches_golden(PATCH, name, references[name])


@pytest.mark.parametrize("name", CASE_NAMES)
def test_unpatched_fails_under_emulation(name: str) -> None:
    assert_fails_unpatched(_cases()[name].run)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_patched_matches_reference(name: str, references: dict[str, Any]) -> None:
    out = patched_run(_cases()[name].run, PATCH)
    if out.is_floating_point():
        torch.testing.assert_close(out, references[name])
    else:
        assert_identical(out, references[name])  # token ids
    store.assert_matches_golden(PATCH, name, out)


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


def test_device_argument_decides(references: dict[str, Any]) -> None:
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

    copy = types.ModuleType(utils.__name__)
    copy.__dict__.update({k: v for k, v in vars(utils).items() if not k.startswith("__")})
    copy.log_mel_spectrogram = changed  # type: ignore[attr-defined]
    problems = patch.check(copy)
    assert any("default of n_mels is 80, expected 128" in p for p in problems), problems
    assert any("no longer uses the constant(s) 400, 160" in p for p in problems), problems


LAZY = textwrap.dedent(
    """
    import json, sys
    import blackwell_compat as bc
    state = bc.apply(only=["s3tokenizer"], force=True).entries[0].state
    assert "s3tokenizer" not in sys.modules
    import s3tokenizer
    from blackwell_compat import inplace
    (status,) = [s for s in bc.status() if s.name == "s3tokenizer"]
    print(json.dumps([state, status.state, inplace.is_swapped(s3tokenizer.log_mel_spectrogram)]))
    """
)


@pytest.mark.slow
def test_applies_lazily_on_import() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAZY], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["pending-import", "applied", True]


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
    from pathlib import Path

    cache = tmp_path / "kernels"
    cache.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", GPU, str(Path(__file__).resolve().parent)],
        capture_output=True, text=True, timeout=600, env=empty_kernel_cache_env(str(cache)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["device"].startswith("cuda")
    assert data["cache"] == []
    # cuFFT vs the CPU FFT: log10 features differ by float rounding only.
    assert data["diff"] <= 1e-4
    # Random-weight codes sit on rounding boundaries of the FSQ quantizer; nearly all agree.
    assert data["codes_equal_fraction"] >= 0.9
