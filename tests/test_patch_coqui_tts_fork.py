"""The ``coqui_tts_fork`` patch against ``coqui-tts`` 0.28 and the full XTTS v2 model (offline).

The session builds the 467 M-parameter model with random weights (``examples/xtts_clone.py``)
and saves it in the legacy layout of the published ``model.pth`` (``XttsConfig`` pickled as an
object, ``XttsArgs``/``XttsAudioConfig`` under ``TTS.tts.models.xtts``).  The file is then made
read-only (mode 0444, plus the immutable attribute when running as root, which ignores modes):

- unpatched, ``coqui-tts`` tries to rewrite it and fails (``Operation not permitted``);
- patched, ``Xtts.load_checkpoint`` loads it, weights identical, and its bytes and modification
  time are unchanged;
- a checkpoint in the fork's own (dict-config) layout still loads, and stays untouched;
- under ``bc.emulate()`` the conditioning path matches the CPU reference with only the
  ``torchaudio`` patch.

Runs in tests-full: coqui-tts 0.28 shares that stack (``requirements/coqui028.txt``).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
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
from blackwell_compat.errors import BlackwellCompatWarning
from blackwell_compat.patches import coqui_tts_fork

pytestmark = [pytest.mark.targets, pytest.mark.slow]

PATCH = "coqui_tts_fork"
XTTS = "TTS.tts.models.xtts"


def _xtts_module() -> types.ModuleType:
    import TTS.tts.models.xtts as module

    return module


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[xtts.XttsCheckpoint]:
    built = xtts.build_checkpoint(tmp_path_factory.mktemp("xtts028") / "xtts_v2")
    print(f"\nXTTS v2 built in {built.build_seconds:.1f} s, saved in {built.save_seconds:.1f} s")
    xtts.make_read_only(built.model_path)
    yield built
    xtts.remove_checkpoint(built)


@pytest.fixture(scope="session")
def loaded(checkpoint: xtts.XttsCheckpoint) -> dict[str, Any]:
    """The read-only legacy checkpoint loaded through ``Xtts.load_checkpoint``, patched."""
    import time

    before = xtts.file_state(checkpoint.model_path)
    started = time.perf_counter()
    with bc.patched(only=[PATCH]) as report:
        model = xtts.example().load_model(checkpoint.folder)
        states = {s.name: s for s in bc.status()}
    print(f"\nXTTS v2 loaded (patched, read-only file) in {time.perf_counter() - started:.1f} s")
    return {
        "model": model,
        "report": report,
        "status": states[PATCH],
        "file_before": before,
        "file_after": xtts.file_state(checkpoint.model_path),
    }


def test_installed_stack_is_the_one_the_facts_are_about() -> None:
    from blackwell_compat.versions import installed_version, release_string

    assert release_string(installed_version("coqui-tts") or "") == "0.28.0"
    assert installed_version("TTS") is None


def test_the_checkpoint_is_legacy_and_read_only(checkpoint: xtts.XttsCheckpoint) -> None:
    import pickle

    with pytest.raises(PermissionError):
        open(checkpoint.model_path, "r+b").close()
    with pytest.raises(pickle.UnpicklingError, match="XttsConfig"):
        torch.load(checkpoint.model_path, map_location="cpu", weights_only=True)


def test_patched_load_of_a_read_only_legacy_file_succeeds(
    checkpoint: xtts.XttsCheckpoint, loaded: dict[str, Any]
) -> None:
    assert loaded["status"].state == engine.APPLIED
    xtts.assert_same_weights(checkpoint.weights, loaded["model"].state_dict())


def test_the_file_is_byte_identical_and_its_mtime_unchanged(loaded: dict[str, Any]) -> None:
    assert loaded["file_after"] == loaded["file_before"]


def test_unpatched_load_tries_to_rewrite_the_file(
    checkpoint: xtts.XttsCheckpoint, loaded: dict[str, Any]
) -> None:
    before = xtts.file_state(checkpoint.model_path)
    with pytest.raises((RuntimeError, PermissionError, OSError), match=r"not permitted|denied"):
        loaded["model"].get_compatible_checkpoint_state_dict(checkpoint.model_path)
    assert xtts.file_state(checkpoint.model_path) == before


def test_a_new_format_checkpoint_loads_and_stays_untouched(
    tmp_path: Path, checkpoint: xtts.XttsCheckpoint, loaded: dict[str, Any]
) -> None:
    """The fork's own layout (config as a dict) takes the first path, unchanged."""
    model = loaded["model"]
    path = tmp_path / "model.pth"
    torch.save({"config": model.config.to_dict(), "model": {"w": torch.arange(3.0)}}, path)
    before = xtts.file_state(path)
    with bc.patched(only=[PATCH]):
        state = model.get_compatible_checkpoint_state_dict(path)
    assert torch.equal(state["w"], torch.arange(3.0))
    assert xtts.file_state(path) == before


# -- patch mechanics --------------------------------------------------------------------------


def test_drift_check_accepts_the_installed_release(loaded: dict[str, Any]) -> None:
    assert coqui_tts_fork.CoquiTTSForkPatch().check(_xtts_module()) == []


def test_the_other_patch_is_skipped_here() -> None:
    (state,) = [s for s in bc.status() if s.name == "coqui_tts"]
    assert state.state == engine.SKIPPED
    assert state.reason == "TTS is not installed"


def test_revert_restores_the_method_exactly(loaded: dict[str, Any]) -> None:
    cls = _xtts_module().Xtts
    method = cls.__dict__["_load_checkpoint"]
    code = method.__code__
    with bc.patched(only=[PATCH]):
        assert cls.__dict__["_load_checkpoint"] is method
        assert method.__code__ is not code
    assert method.__code__ is code
    assert "__wrapped__" not in method.__dict__


def _drifted(module: types.ModuleType, old: str, new: str) -> types.ModuleType:
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
            "                torch.save(checkpoint, model_path)\n",
            "                pass\n",
            "_load_checkpoint no longer uses save",
        ),
        (
            "def _load_checkpoint(self, model_path: Path) -> dict:",
            "def _load_checkpoint(self, model_path: Path, cache: bool = True) -> dict:",
            "takes (self, model_path, cache)",
        ),
        (
            "def _legacy_safe_globals():",
            "def _old_class_paths():",
            "_legacy_safe_globals",
        ),
    ],
)
def test_drift_is_refused(
    loaded: dict[str, Any], old: str, new: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _xtts_module()
    drifted = _drifted(module, old, new)
    assert any(problem in p for p in coqui_tts_fork.CoquiTTSForkPatch().check(drifted))
    monkeypatch.setitem(sys.modules, XTTS, drifted)
    method = drifted.Xtts._load_checkpoint
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
        report = bc.apply(only=["coqui_tts_fork"])
        assert report.pending == ["coqui_tts_fork"], str(report)
        assert "TTS.tts.models.xtts" not in sys.modules
        from TTS.tts.models.xtts import Xtts
        method = Xtts._load_checkpoint
        assert method.__kwdefaults__ and "__blackwell_compat_impl__" in method.__kwdefaults__
        (state,) = [s for s in bc.status() if s.name == "coqui_tts_fork"]
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
    torch.testing.assert_close(speaker, speaker_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpt, gpt_ref, rtol=1e-4, atol=1e-5)


def test_the_forks_allow_list_window_keeps_the_users_classes() -> None:
    """Issue 14, point 11: the fork's own window (torch's safe_globals) removed on exit the
    classes the user had allow-listed, before the load or during it."""
    module = _xtts_module()
    config, args, audio, dataset = (
        module.XttsConfig,
        module.XttsArgs,
        module.XttsAudioConfig,
        module.BaseDatasetConfig,
    )

    def listed(cls: type) -> bool:
        return any(entry is cls for entry in torch.serialization.get_safe_globals())

    torch.serialization.add_safe_globals([config])  # the user's own, before the load
    try:
        with bc.patched(only=[PATCH]):
            with coqui_tts_fork._window_kept_by_difference(module):
                with module._legacy_safe_globals():
                    assert all(listed(c) for c in (config, args, audio, dataset))
                    torch.serialization.add_safe_globals([args])  # the user's, during it
            assert listed(config) and listed(args)  # both the user's: kept
            assert not listed(audio) and not listed(dataset)  # the window's: gone
    finally:
        torch.serialization.clear_safe_globals()
