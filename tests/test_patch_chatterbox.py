"""The ``chatterbox`` patch: ``S3Tokenizer`` (log-mel and tokens), the CAMPPlus speaker
encoder's fbank features and embedding, and the resemble-perth watermarker.

(1) reference on the CPU, unpatched, outside emulation (also checked against the golden);
(2) inside ``bc.emulate()`` without patches every case dies with the NVRTC error;
(3) inside ``bc.emulate()`` with only this patch (no ``torch`` guard, no ``torchaudio`` patch)
every case runs and matches the reference: float32 ``assert_close`` defaults, token ids exactly.
Plus captured references, revert identity, drift refusal and lazy application on import.
"""

from __future__ import annotations

import inspect
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
    assert_fails_unpatched,
    assert_identical,
    patched_emulation,
    patched_run,
    reference,
)

import blackwell_compat as bc
from blackwell_compat import state as process_state
from blackwell_compat.errors import BlackwellCompatWarning
from blackwell_compat.patches import chatterbox as chatterbox_patch
from blackwell_compat.toolkit import drift

pytestmark = [pytest.mark.targets, pytest.mark.slow]

PATCH = "chatterbox"
CASE_NAMES = [
    "campplus_embedding",
    "campplus_fbank",
    "perth_watermarked",
    "s3_log_mel",
    "s3_log_mel_padded",
    "s3_tokens",
]


def _cases() -> dict[str, Any]:
    from golden.cases_chatterbox import CASES

    return CASES


def _modules() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    import chatterbox.models.s3gen.xvector as xvector
    import chatterbox.models.s3tokenizer.s3tokenizer as s3
    import perth.perth_net.perth_net_implicit.utils as perth_utils

    return s3, xvector, perth_utils


@pytest.fixture(scope="module")
def references() -> dict[str, Any]:
    process_state.reset_for_tests()
    return {name: reference(case.run) for name, case in _cases().items()}


# -- golden / failure / parity ----------------------------------------------------------------


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


def test_all_three_sites_are_patched_and_listed() -> None:
    with bc.emulate(), bc.patched(only=PATCH) as report:
        (entry,) = report.entries
        assert entry.state == "applied", entry.reason
        for module in chatterbox_patch.ChatterboxPatch.modules:
            assert module in entry.reason
        assert entry.strategy is None and entry.strategies == ()


def test_tensors_off_the_affected_device_take_the_original_code(
    references: dict[str, Any],
) -> None:
    with bc.patched(only=PATCH, force=True) as report:
        assert report.applied == [PATCH]
        for name in ("s3_log_mel", "campplus_fbank", "perth_watermarked"):
            assert_identical(_cases()[name].run(), references[name])


def test_works_alongside_the_torchaudio_patch(references: dict[str, Any]) -> None:
    # Either order of rewrites reaches the same features (the xvector rewrite does not depend
    # on the torchaudio patch, and does not mind it either).
    with patched_emulation([PATCH, "torchaudio"]):
        torch.testing.assert_close(_cases()["campplus_fbank"].run(), references["campplus_fbank"])


# -- captured references, revert --------------------------------------------------------------


def test_references_taken_before_apply_see_the_rewrite(references: dict[str, Any]) -> None:
    from chatterbox.models.s3gen.xvector import extract_feature as early_extract
    from golden.cases_chatterbox import _utterances, watermarker
    from perth.perth_net.perth_net_implicit.audio_processor import cx_to_magphase as early_cx

    with patched_emulation(PATCH):
        features, _, _ = early_extract(_utterances())
        spectrum = watermarker().perth_net.ap.spectrogram(torch.ones(4096))
        mag, phase = early_cx(watermarker().perth_net.hp, spectrum)
    torch.testing.assert_close(features, references["campplus_fbank"])
    assert mag.shape == phase.shape == spectrum.shape and not mag.is_complex()


def test_revert_restores_every_object_exactly() -> None:
    s3, xvector, perth_utils = _modules()
    log_mel = inspect.getattr_static(s3.S3Tokenizer, "log_mel_spectrogram")
    functions = [xvector.extract_feature, perth_utils.cx_to_magphase, perth_utils.magphase_to_cx]
    codes = [f.__code__ for f in functions]
    bc.apply(only=PATCH, force=True)
    assert inspect.getattr_static(s3.S3Tokenizer, "log_mel_spectrogram") is not log_mel
    assert all(f.__code__ is not c for f, c in zip(functions, codes, strict=True))
    bc.revert()
    assert inspect.getattr_static(s3.S3Tokenizer, "log_mel_spectrogram") is log_mel
    assert [xvector.extract_feature, perth_utils.cx_to_magphase, perth_utils.magphase_to_cx] == (
        functions
    )
    assert all(f.__code__ is c for f, c in zip(functions, codes, strict=True))
    assert "__wrapped__" not in vars(xvector.extract_feature)


# -- drift ------------------------------------------------------------------------------------


def _drifted(module: types.ModuleType, old: str, new: str) -> types.ModuleType:
    """A copy of *module* built from its source with one edit (what a future release did)."""
    source = inspect.getsource(module)
    assert old in source, old
    copy = types.ModuleType(module.__name__)
    copy.__file__ = f"<drifted {module.__name__}>"
    copy.__package__ = module.__package__
    exec(compile(source.replace(old, new, 1), copy.__file__, "exec"), copy.__dict__)
    return copy


def test_drift_check_accepts_the_installed_versions() -> None:
    patch = chatterbox_patch.ChatterboxPatch()
    assert [patch.check(m) for m in _modules()] == [[], [], []]


@pytest.mark.parametrize(
    ("index", "old", "new", "problem"),
    [
        (
            0,
            "magnitudes = stft[..., :-1].abs()**2",
            "magnitudes = stft[..., :-1].real**2 + stft[..., :-1].imag**2",
            "log_mel_spectrogram no longer uses abs",
        ),
        (
            0,
            "        padding: int = 0,\n    ):",
            "        padding: int = 0,\n        n_fft: int = 400,\n    ):",
            "log_mel_spectrogram takes (self, audio, padding, n_fft)",
        ),
        (
            1,
            "Kaldi.fbank(au.unsqueeze(0), num_mel_bins=80)",
            "Kaldi.spectrogram(au.unsqueeze(0))",
            "extract_feature no longer uses fbank",
        ),
        (
            2,
            "phase = torch.angle(spec)",
            "phase = torch.atan2(spec.imag, spec.real)",
            "cx_to_magphase no longer uses angle",
        ),
    ],
)
def test_drift_is_refused(
    index: int, old: str, new: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _modules()[index]
    drifted = _drifted(module, old, new)
    assert any(problem in p for p in chatterbox_patch.ChatterboxPatch().check(drifted))
    monkeypatch.setitem(sys.modules, module.__name__, drifted)
    before = dict(vars(drifted))
    with pytest.warns(BlackwellCompatWarning, match="refused"):
        report = bc.apply(only=PATCH, force=True)
    assert problem in report.failed[PATCH]
    assert all(vars(drifted)[k] is v for k, v in before.items())
    # The refusal is per module: the other two sites are patched.
    (entry,) = [s for s in bc.status() if s.name == PATCH]
    assert entry.state == "drift"
    assert "patched " in entry.reason and module.__name__ not in entry.reason.split("patched ")[1]


def test_changed_kaldi_defaults_are_drift() -> None:
    import torchaudio.compliance.kaldi as kaldi

    # The first "dither: float = 0.0" of kaldi.py that is followed by high_freq is fbank's.
    old = "    dither: float = 0.0,\n    energy_floor: float = 1.0,\n"
    assert inspect.getsource(kaldi.fbank).count(old) == 1
    source = inspect.getsource(kaldi)
    at = source.index(old, source.index("def fbank("))
    edited = source[:at] + old.replace("0.0", "1.0") + source[at + len(old) :]
    drifted = types.ModuleType(kaldi.__name__)
    exec(compile(edited, "<drifted kaldi>", "exec"), drifted.__dict__)
    problems = chatterbox_patch.kaldi_problems(drifted)
    assert problems == [f"{kaldi.__name__}.fbank default dither=1.0, expected 0.0"]
    assert chatterbox_patch.kaldi_problems(kaldi) == []


def test_unsupported_perth_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drift, "installed_version", lambda name: "2.0.0")
    problems = chatterbox_patch.perth_problems(_modules()[2])
    assert problems == ["resemble-perth 2.0.0 is outside the supported range '>=1.0,<1.1'"]


# -- lazy application -------------------------------------------------------------------------

LAZY_CHILD = textwrap.dedent(
    """
    import json, sys
    import blackwell_compat as bc

    out = {"imported": [m for m in ("chatterbox", "perth") if m in sys.modules]}
    out["before"] = bc.apply(only=["chatterbox"], force=True).entries[0].state
    import chatterbox.models.s3tokenizer.s3tokenizer as s3
    (entry,) = [s for s in bc.status() if s.name == "chatterbox"]
    import chatterbox.models.s3gen.xvector as xvector
    import perth.perth_net.perth_net_implicit.utils as utils
    out["after"] = entry.state
    out["reason"] = entry.reason
    out["swapped"] = [
        s3.S3Tokenizer.log_mel_spectrogram.__module__ == "blackwell_compat.patches.chatterbox",
        "__blackwell_compat_impl__" in (xvector.extract_feature.__kwdefaults__ or {}),
        "__blackwell_compat_impl__" in (utils.cx_to_magphase.__kwdefaults__ or {}),
    ]
    print(json.dumps(out))
    """
)


def test_applied_lazily_when_chatterbox_is_imported() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAZY_CHILD], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["imported"] == []
    assert data["before"] == "pending-import"
    # Importing the s3tokenizer submodule runs chatterbox/__init__, which imports the TTS
    # classes and with them the xvector module and perth: all three sites are patched.
    assert data["after"] == "applied", data["reason"]
    assert data["swapped"] == [True, True, True]
