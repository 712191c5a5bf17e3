"""The ``coqui_tts`` patch against Coqui ``TTS`` 0.22 and the full XTTS v2 model (offline).

The session builds the 467 M-parameter model from the published configuration with random
weights and a stand-in 6681-id BPE vocabulary (``examples/xtts_clone.py``), saves it as
``{"config": XttsConfig, "model": state_dict}`` and loads it through ``Xtts.load_checkpoint``:

- unpatched, torch >= 2.6 refuses it (``weights_only``, ``Unsupported global ... XttsConfig``);
- patched, it loads, weights identical, and torch's allow-list is as before afterwards;
- a checkpoint with one more global (a ``__reduce__`` payload) is still refused, and its
  payload never runs; with ``weights_only=False`` (the public workaround) it runs;
- under ``bc.emulate()`` the conditioning path (torchaudio ``MelSpectrogram`` in the speaker
  encoder and in the GPT conditioning) dies with the NVRTC error unpatched and matches the CPU
  reference with only the ``torchaudio`` patch.

Needs the ``tests-tts022`` environment (``requirements/tts022.txt``): TTS 0.22 cannot share
one with chatterbox-tts or coqui-tts.
"""

from __future__ import annotations

import inspect
import os
import pickle
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from support import xtts
from support.audio_parity import ARCH, NVRTC_ERROR

import blackwell_compat as bc
from blackwell_compat import engine
from blackwell_compat.doctor import pins
from blackwell_compat.errors import BlackwellCompatWarning
from blackwell_compat.patches import coqui_tts

pytestmark = [pytest.mark.tts022, pytest.mark.targets, pytest.mark.slow]

PATCH = "coqui_tts"
XTTS = "TTS.tts.models.xtts"


def _xtts_module() -> types.ModuleType:
    import TTS.tts.models.xtts as module

    return module


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[xtts.XttsCheckpoint]:
    built = xtts.build_checkpoint(tmp_path_factory.mktemp("xtts022") / "xtts_v2")
    print(f"\nXTTS v2 built in {built.build_seconds:.1f} s, saved in {built.save_seconds:.1f} s")
    yield built
    xtts.remove_checkpoint(built)


@pytest.fixture(scope="session")
def loaded(checkpoint: xtts.XttsCheckpoint) -> dict[str, Any]:
    """The checkpoint folder loaded through ``Xtts.load_checkpoint`` with the patch applied."""
    before = list(torch.serialization.get_safe_globals())
    started = time.perf_counter()
    with bc.patched(only=[PATCH]) as report:
        model = xtts.example().load_model(checkpoint.folder)
        states = {s.name: s for s in bc.status()}
    seconds = time.perf_counter() - started
    print(f"\nXTTS v2 loaded (patched) in {seconds:.1f} s")
    return {
        "model": model,
        "report": report,
        "status": states[PATCH],
        "safe_globals_before": before,
        "safe_globals_after": list(torch.serialization.get_safe_globals()),
    }


# -- loading ----------------------------------------------------------------------------------


def test_installed_stack_is_the_one_the_facts_are_about() -> None:
    from blackwell_compat.versions import installed_version, release_string

    assert release_string(installed_version("TTS") or "") == "0.22.0"
    assert tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 6)


def test_unpatched_load_fails_with_the_weights_only_error(
    checkpoint: xtts.XttsCheckpoint, loaded: dict[str, Any]
) -> None:
    model = loaded["model"]
    with pytest.raises(pickle.UnpicklingError) as caught:
        model.get_compatible_checkpoint_state_dict(str(checkpoint.model_path))
    text = str(caught.value)
    assert "Weights only load failed" in text
    assert "Unsupported global: GLOBAL TTS.tts.configs.xtts_config.XttsConfig" in text


def test_patched_load_succeeds_with_identical_weights(
    checkpoint: xtts.XttsCheckpoint, loaded: dict[str, Any]
) -> None:
    assert PATCH in loaded["report"].pending or PATCH in loaded["report"].applied
    assert loaded["status"].state == engine.APPLIED
    xtts.assert_same_weights(checkpoint.weights, loaded["model"].state_dict())


def test_the_allow_list_is_as_before_after_the_load(loaded: dict[str, Any]) -> None:
    # torch keeps a set: compare as sets (the listing order varies)
    assert set(loaded["safe_globals_after"]) == set(loaded["safe_globals_before"])
    names = {getattr(g, "__name__", "") for g in loaded["safe_globals_after"]}
    assert not names & {"XttsConfig", "XttsArgs", "XttsAudioConfig", "BaseDatasetConfig"}


def test_only_the_checkpoint_method_is_widened(
    checkpoint: xtts.XttsCheckpoint, loaded: dict[str, Any]
) -> None:
    with bc.patched(only=[PATCH]):
        with pytest.raises(pickle.UnpicklingError, match="XttsConfig"):
            torch.load(checkpoint.model_path, map_location="cpu")
        state = loaded["model"].get_compatible_checkpoint_state_dict(str(checkpoint.model_path))
    assert set(checkpoint.weights) <= set(state)


class _Payload:
    """Creates a folder when unpickled: stands for arbitrary code in a checkpoint file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.target),))


@pytest.fixture(scope="session")
def hostile_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, checkpoint: xtts.XttsCheckpoint
) -> tuple[Path, Path]:
    """An XTTS-layout checkpoint (real config, small state) with one more global in it."""
    from TTS.tts.configs.xtts_config import XttsConfig

    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "payload-ran"
    config = XttsConfig()
    config.load_json(str(checkpoint.folder / "config.json"))
    path = folder / "model.pth"
    with xtts.example().legacy_class_paths():
        torch.save(
            {"config": config, "model": {"w": torch.ones(2)}, "extra": _Payload(marker)}, path
        )
    return path, marker


def test_a_checkpoint_with_a_foreign_global_is_still_refused(
    hostile_checkpoint: tuple[Path, Path], loaded: dict[str, Any]
) -> None:
    path, marker = hostile_checkpoint
    with bc.patched(only=[PATCH]):
        with pytest.raises(pickle.UnpicklingError) as caught:
            loaded["model"].get_compatible_checkpoint_state_dict(str(path))
    # torch's own refusal, naming the payload's global (posix.mkdir, a blocked module)
    assert "unsupported global" in str(caught.value).lower()
    assert "mkdir" in str(caught.value)
    assert not marker.exists()


def test_weights_only_false_would_have_run_the_payload(
    hostile_checkpoint: tuple[Path, Path],
) -> None:
    """Why the public workaround is not the fix: the same file runs its code."""
    path, marker = hostile_checkpoint
    assert not marker.exists()
    try:
        torch.load(path, map_location="cpu", weights_only=False)
        assert marker.is_dir()
    finally:
        if marker.exists():
            marker.rmdir()


# -- patch mechanics --------------------------------------------------------------------------


def test_drift_check_accepts_the_installed_release(loaded: dict[str, Any]) -> None:
    assert coqui_tts.CoquiTTSPatch().check(_xtts_module()) == []


def test_revert_restores_the_method_exactly(
    checkpoint: xtts.XttsCheckpoint, loaded: dict[str, Any]
) -> None:
    cls = _xtts_module().Xtts
    method = cls.__dict__["get_compatible_checkpoint_state_dict"]
    code = method.__code__
    with bc.patched(only=[PATCH]):
        assert cls.__dict__["get_compatible_checkpoint_state_dict"] is method
        assert method.__code__ is not code
    assert method.__code__ is code
    assert "__wrapped__" not in method.__dict__
    with pytest.raises(pickle.UnpicklingError):
        loaded["model"].get_compatible_checkpoint_state_dict(str(checkpoint.model_path))


def _drifted(module: types.ModuleType, old: str, new: str) -> types.ModuleType:
    """A copy of *module* built from its source with one edit (what a future release did)."""
    source = inspect.getsource(module)
    assert old in source, old
    copy = types.ModuleType(module.__name__)
    copy.__file__ = f"<drifted {module.__name__}>"
    copy.__package__ = module.__package__
    exec(compile(source.replace(old, new, 1), copy.__file__, "exec"), copy.__dict__)
    return copy


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            'checkpoint = load_fsspec(model_path, map_location=torch.device("cpu"))["model"]',
            'checkpoint = torch.load(model_path, map_location="cpu", weights_only=False)["model"]',
            "get_compatible_checkpoint_state_dict no longer uses load_fsspec",
        ),
        (
            "def get_compatible_checkpoint_state_dict(self, model_path):",
            "def get_compatible_checkpoint_state_dict(self, model_path, strict=True):",
            "takes (self, model_path, strict)",
        ),
        (
            "class XttsArgs(Coqpit):",
            "class XttsModelArgs(Coqpit):",
            "XttsArgs is missing",
        ),
    ],
)
def test_drift_is_refused(
    loaded: dict[str, Any], old: str, new: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _xtts_module()
    drifted = _drifted(module, old, new)
    assert any(problem in p for p in coqui_tts.CoquiTTSPatch().check(drifted))
    monkeypatch.setitem(sys.modules, XTTS, drifted)
    method = drifted.Xtts.get_compatible_checkpoint_state_dict
    code = method.__code__
    with pytest.warns(BlackwellCompatWarning, match="refused"):
        report = bc.apply(only=PATCH)
    assert problem in report.failed[PATCH]
    assert method.__code__ is code


def test_applies_lazily_when_xtts_is_imported() -> None:
    script = textwrap.dedent(
        """
        import sys
        import blackwell_compat as bc
        report = bc.apply(only=["coqui_tts"])
        assert report.pending == ["coqui_tts"], str(report)
        assert "TTS.tts.models.xtts" not in sys.modules
        from TTS.tts.models.xtts import Xtts
        method = Xtts.get_compatible_checkpoint_state_dict
        assert method.__kwdefaults__ and "__blackwell_compat_impl__" in method.__kwdefaults__
        (state,) = [s for s in bc.status() if s.name == "coqui_tts"]
        assert state.state == "applied", state
        bc.revert()
        assert not method.__kwdefaults__
        print("OK")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("OK")


# -- the conditioning path under emulation ----------------------------------------------------


def test_conditioning_fails_emulated_and_matches_the_cpu_with_the_torchaudio_patch(
    loaded: dict[str, Any],
) -> None:
    model = loaded["model"]
    gpt_ref, speaker_ref = xtts.conditioning(model)
    with bc.emulate(ARCH), pytest.raises(RuntimeError, match=NVRTC_ERROR):
        xtts.conditioning(model)
    with bc.emulate(ARCH), bc.patched(only=["torchaudio"]) as report:
        assert report.applied == ["torchaudio"], str(report)
        gpt, speaker = xtts.conditioning(model)
    assert gpt.shape == (1, 32, 1024)
    assert speaker.shape == (1, 512, 1)
    torch.testing.assert_close(speaker, speaker_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpt, gpt_ref, rtol=1e-4, atol=1e-5)


# -- the example and the doctor ---------------------------------------------------------------


def test_example_random_weights_mode_end_to_end(
    checkpoint: xtts.XttsCheckpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clone.wav"
    argv = ["--random-weights", str(checkpoint.folder), "--max-new-tokens", "4", "--out", str(out)]
    assert xtts.example().main(argv) == 0
    printed = capsys.readouterr().out
    assert "coqui_tts" in printed
    import wave

    with wave.open(str(out), "rb") as audio:
        assert audio.getframerate() == 24000
        assert audio.getnframes() > 0


def test_doctor_pins_on_this_stack() -> None:
    result = pins.check_pins()
    ids = {f["id"] for f in result.data["findings"]}
    # transformers 4.51.3 (requirements/tts022.txt): inference works, inference_stream does not
    assert {i for i in ids if i.startswith("tts022-transformers")} == {"tts022-transformers-4.41"}
    assert "tts022-weights-only" in ids
    assert "tts022-python" not in ids
    assert result.status == "warn"
