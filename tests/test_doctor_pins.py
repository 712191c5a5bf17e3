"""The doctor's ``pins`` check: known-incompatible pins of the speech stack, with their fixes.

Stacks are plain data (:class:`SpeechStack`); the live reading is checked against this
interpreter's own metadata.
"""

from __future__ import annotations

import sys

import pytest

from blackwell_compat.doctor import checks, model, pins
from blackwell_compat.doctor.pins import SpeechStack, find_pins, pins_result
from blackwell_compat.versions import installed_version

CHATTERBOX_REQUIRES = (
    'numpy<2.0.0,>=1.24.0; python_version < "3.13"',
    'torch==2.6.0; python_version < "3.14"',
    'torch>=2.9.0; python_version >= "3.14"',
    'torchaudio==2.6.0; python_version < "3.14"',
    'torchaudio>=2.9.0; python_version >= "3.14"',
    "transformers==5.2.0",
)


def stack(python: tuple[int, int] = (3, 11), **versions: str) -> SpeechStack:
    names = {name.replace("_", "-"): v for name, v in versions.items()}
    if "TTS" not in names and "tts" in names:
        names["TTS"] = names.pop("tts")
    requirements = {"chatterbox-tts": CHATTERBOX_REQUIRES} if "chatterbox-tts" in names else {}
    return SpeechStack(python=python, versions=names, requirements=requirements)


def ids(s: SpeechStack) -> list[str]:
    return [f.id for f in find_pins(s)]


@pytest.mark.parametrize(
    ("transformers", "expected", "severity", "fix"),
    [
        ("4.57.0", "tts022-transformers-4.57", "fail", "4.51.3"),
        ("5.2.0", "tts022-transformers-4.57", "fail", "4.51.3"),
        ("4.56.2", "tts022-transformers-4.52", "fail", "4.51.3"),
        ("4.52.0", "tts022-transformers-4.52", "fail", "4.51.3"),
        ("4.51.3", "tts022-transformers-4.41", "warn", "4.40.2"),
        ("4.41.0", "tts022-transformers-4.41", "warn", "4.40.2"),
    ],
)
def test_tts022_with_transformers(transformers: str, expected: str, severity: str, fix: str):
    findings = find_pins(stack(tts="0.22.0", transformers=transformers, torch="2.5.1"))
    (finding,) = [f for f in findings if f.id.startswith("tts022-transformers")]
    assert finding.id == expected
    assert finding.severity == severity
    assert f"transformers {transformers}" in finding.message
    assert finding.commands == (f'pip install "transformers=={fix}"',)


def test_tts022_with_an_old_transformers_is_fine():
    assert ids(stack(tts="0.22.0", transformers="4.40.2", torch="2.5.1")) == []


def test_the_transformers_rule_is_about_tts_022_only():
    assert ids(stack(tts="0.21.3", transformers="4.57.0")) == []
    assert ids(stack(coqui_tts="0.28.0", transformers="5.2.0", torch="2.11.0")) == []


@pytest.mark.parametrize(
    ("python", "flagged"), [((3, 11), False), ((3, 12), True), ((3, 13), True)]
)
def test_tts022_on_new_python(python: tuple[int, int], flagged: bool):
    found = "tts022-python" in ids(stack(python, tts="0.22.0"))
    assert found is flagged


def test_tts_on_torch_26_points_at_the_patch_and_warns_against_weights_only_false():
    (finding,) = find_pins(stack(tts="0.22.0", torch="2.7.0"))
    assert finding.id == "tts022-weights-only"
    assert finding.severity == "info"
    assert "coqui_tts" in finding.message
    assert "weights_only=False" in finding.hint
    assert ids(stack(tts="0.22.0", torch="2.5.1")) == []
    # NVIDIA container builds are pre-releases of the same release
    assert "tts022-weights-only" in ids(stack(tts="0.22.0", torch="2.6.0a0+ecf3bae40a"))


def test_both_tts_distributions_installed_is_a_failure():
    findings = find_pins(stack(tts="0.22.0", coqui_tts="0.28.0"))
    assert findings[0].id == "tts-and-coqui-tts"
    assert findings[0].severity == "fail"


def test_tts022_without_torchcodec_on_torchaudio_29():
    assert "tts022-torchcodec" in ids(stack(tts="0.22.0", torchaudio="2.9.0"))
    assert "tts022-torchcodec" not in ids(stack(tts="0.22.0", torchaudio="2.8.0"))
    assert "tts022-torchcodec" not in ids(
        stack(tts="0.22.0", torchaudio="2.11.0", torchcodec="0.11.1")
    )


def test_chatterbox_pin_against_a_newer_torch_is_expected_with_no_deps():
    findings = find_pins(stack(chatterbox_tts="0.1.7", torch="2.11.0", torchaudio="2.11.0"))
    assert [f.id for f in findings] == ["chatterbox-torch-pin", "chatterbox-torchaudio-pin"]
    torch_pin = findings[0]
    assert torch_pin.severity == "info"
    assert "torch==2.6.0" in torch_pin.message and "torch 2.11.0" in torch_pin.message
    assert "--no-deps" in torch_pin.message and "--no-deps" in torch_pin.hint
    assert ids(stack(chatterbox_tts="0.1.7", torch="2.6.0", torchaudio="2.6.0")) == []
    # on Python 3.14 chatterbox asks for torch>=2.9 instead: no exact pin to compare
    assert ids(stack((3, 14), chatterbox_tts="0.1.7", torch="2.11.0")) == []


def test_findings_are_ordered_most_severe_first():
    s = stack((3, 12), tts="0.22.0", transformers="4.45.0", torch="2.7.0", torchaudio="2.9.0")
    severities = [f.severity for f in find_pins(s)]
    assert severities == sorted(severities, key=["fail", "warn", "info"].index)
    assert severities[0] == "fail"


# -- the check result --------------------------------------------------------------------------


def test_no_speech_stack_is_a_skip():
    result = pins_result(stack(torch="2.11.0"))
    assert result.status == model.SKIP
    assert result.id == "pins"


def test_only_information_passes_with_details_and_no_hint():
    result = pins_result(stack(chatterbox_tts="0.1.7", torch="2.11.0", torchaudio="2.6.0"))
    assert result.status == model.PASS
    assert "no known incompatible pins" in result.summary
    assert any("torch==2.6.0" in line for line in result.details)
    assert any("Nothing to do" in line for line in result.details)
    assert result.hint is None and result.commands == ()


def test_a_failure_carries_the_commands_in_its_hint():
    result = pins_result(stack(tts="0.22.0", transformers="4.57.1", torch="2.11.0"))
    assert result.status == model.FAIL
    assert "1 known incompatibility" in result.summary
    assert result.commands == ('pip install "transformers==4.51.3"',)
    assert result.hint is not None
    assert '  $ pip install "transformers==4.51.3"' in result.hint
    data = result.data
    assert data["versions"]["TTS"] == "0.22.0"
    assert [f["id"] for f in data["findings"]] == [
        "tts022-transformers-4.57",
        "tts022-weights-only",
    ]


def test_a_warning_only_stack_warns():
    result = pins_result(stack(tts="0.22.0", transformers="4.45.0", torch="2.5.1"))
    assert result.status == model.WARN


def test_the_live_reading_matches_this_interpreter():
    live = pins.read_stack()
    assert live.python == sys.version_info[:2]
    for name in pins.DISTRIBUTIONS:
        assert live.version(name) == installed_version(name)
    if live.version("chatterbox-tts"):
        assert any(r.startswith("torch") for r in live.requirements["chatterbox-tts"])


def test_registered_in_the_doctor():
    assert ("pins", pins.TITLE, pins.check_pins) in checks.CHECKS
    result = pins.check_pins()
    assert result.id == "pins" and result.status in model.STATUSES
