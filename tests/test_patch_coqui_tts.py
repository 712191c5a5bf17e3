"""The XTTS patches without XTTS: the scoped allow-list on real ``torch.load``, the declarations
(entry points, version ranges, ``list``/``status()``), and the doctor's view of them.

Runs in every environment (torch only).  The tests against the real libraries live in
``test_patch_coqui_tts_xtts.py`` (TTS 0.22) and ``test_patch_coqui_tts_fork.py`` (coqui-tts
0.28).
"""

from __future__ import annotations

import io
import pickle
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat import engine
from blackwell_compat.cli import list_cmd
from blackwell_compat.patches import coqui_tts, coqui_tts_fork
from blackwell_compat.toolkit import safe_globals
from blackwell_compat.versions import in_range, installed_version


@dataclass
class StandInConfig:
    """Plays an XTTS config class: a plain data class pickled by ``torch.save``."""

    rate: int = 22050
    items: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class OtherConfig:
    """A class nobody allow-lists."""

    name: str = "other"


def _saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _load(data: bytes) -> object:
    return torch.load(io.BytesIO(data), weights_only=True)


def _listed(cls: type) -> bool:
    return any(entry is cls for entry in torch.serialization.get_safe_globals())


CHECKPOINT = {"config": StandInConfig(), "model": {"w": torch.arange(4.0)}}


# -- the scoped allow-list ---------------------------------------------------------------------


def test_weights_only_refuses_the_config_class_without_the_scope() -> None:
    with pytest.raises(pickle.UnpicklingError, match="StandInConfig"):
        _load(_saved(CHECKPOINT))


def test_allow_listed_admits_the_class_for_the_block_only() -> None:
    data = _saved(CHECKPOINT)
    with coqui_tts.allow_listed([StandInConfig]):
        assert _listed(StandInConfig)
        loaded = _load(data)
    assert isinstance(loaded, dict)
    assert loaded["config"] == StandInConfig()
    assert torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert not _listed(StandInConfig)
    with pytest.raises(pickle.UnpicklingError, match="StandInConfig"):
        _load(data)


def test_a_foreign_global_is_still_refused_inside_the_scope() -> None:
    data = _saved({**CHECKPOINT, "extra": OtherConfig()})
    with coqui_tts.allow_listed([StandInConfig]):
        with pytest.raises(pickle.UnpicklingError, match=r"Unsupported global.*OtherConfig"):
            _load(data)
    assert not _listed(StandInConfig)


def test_the_users_own_allow_listing_survives_the_scope() -> None:
    with torch.serialization.safe_globals([StandInConfig]):  # the user's own, outer scope
        with coqui_tts.allow_listed([StandInConfig]):
            pass
        assert _listed(StandInConfig)
        _load(_saved(CHECKPOINT))
    assert not _listed(StandInConfig)


def test_nested_scopes_keep_the_class_until_the_outer_one_ends() -> None:
    with coqui_tts.allow_listed([StandInConfig]):
        with coqui_tts.allow_listed([StandInConfig, OtherConfig]):
            assert _listed(StandInConfig) and _listed(OtherConfig)
        assert _listed(StandInConfig)
        assert not _listed(OtherConfig)
    assert not _listed(StandInConfig)
    assert not safe_globals._holders


def test_the_scope_ends_on_an_exception() -> None:
    with pytest.raises(KeyError), coqui_tts.allow_listed([StandInConfig]):
        raise KeyError("boom")
    assert not _listed(StandInConfig)
    assert not safe_globals._holders


def test_concurrent_loads_share_one_registration() -> None:
    data = _saved(CHECKPOINT)
    both_inside = threading.Barrier(2, timeout=30)
    first_left = threading.Event()
    outcome: dict[str, object] = {}

    def first() -> None:
        with coqui_tts.allow_listed([StandInConfig]):
            both_inside.wait()
        first_left.set()

    def second() -> None:
        with coqui_tts.allow_listed([StandInConfig]):
            both_inside.wait()
            first_left.wait(timeout=30)
            # The first scope has ended; this one still holds the class.
            try:
                outcome["loaded"] = _load(data)
            except Exception as exc:  # reported below
                outcome["error"] = exc

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    assert isinstance(outcome.get("loaded"), dict)
    assert not _listed(StandInConfig)


@pytest.fixture
def watched() -> Any:
    """``add_safe_globals`` watched as while the patch is applied; restored afterwards."""
    from blackwell_compat.registry import PatchContext

    ctx = PatchContext(patch="coqui_tts", strategy=None)
    coqui_tts.watch_user_additions(ctx)
    yield ctx
    assert ctx.revert() == []
    torch.serialization.clear_safe_globals()


def test_a_class_the_user_allow_lists_during_the_window_stays(watched: Any) -> None:
    """Issue 14, point 11: the user's own add_safe_globals during a load used to be undone."""
    with coqui_tts.allow_listed([StandInConfig]):
        torch.serialization.add_safe_globals([StandInConfig, OtherConfig])
    assert _listed(StandInConfig) and _listed(OtherConfig)
    assert not safe_globals._holders and not safe_globals._claimed_by_user
    _load(_saved(CHECKPOINT))


def test_a_captured_add_safe_globals_is_watched_too(watched: Any) -> None:
    from torch.serialization import add_safe_globals  # captured before the window opens

    with coqui_tts.allow_listed([StandInConfig]):
        with coqui_tts.allow_listed([StandInConfig]):  # nested: the outer one closes it
            add_safe_globals([StandInConfig])
    assert _listed(StandInConfig)


def test_a_user_addition_in_another_thread_during_the_window_survives(watched: Any) -> None:
    inside, added = threading.Event(), threading.Event()

    def user() -> None:
        inside.wait(30)
        torch.serialization.add_safe_globals([StandInConfig])
        added.set()

    thread = threading.Thread(target=user)
    thread.start()
    with coqui_tts.allow_listed([StandInConfig]):
        inside.set()
        assert added.wait(30)
    thread.join(30)
    assert _listed(StandInConfig)


def test_without_user_additions_the_window_closes_by_difference(watched: Any) -> None:
    torch.serialization.add_safe_globals([OtherConfig])  # before: not the window's business
    with coqui_tts.allow_listed([StandInConfig]):
        torch.serialization.add_safe_globals([int])  # meanwhile, another class
    assert not _listed(StandInConfig)
    assert _listed(OtherConfig) and _listed(int)


def test_reverting_the_watch_restores_torchs_function(watched: Any) -> None:
    add = torch.serialization.add_safe_globals
    code = add.__code__
    assert watched.revert() == []
    assert torch.serialization.add_safe_globals is add
    assert add.__code__ is not code  # the original code is back
    with coqui_tts.allow_listed([StandInConfig]):
        add([StandInConfig])  # unwatched: the window takes it away (documented)
    assert not _listed(StandInConfig)


def test_the_four_xtts_classes_are_named_exactly() -> None:
    assert coqui_tts.XTTS_CHECKPOINT_CLASSES == (
        ("TTS.tts.configs.xtts_config", "XttsConfig"),
        ("TTS.tts.models.xtts", "XttsAudioConfig"),
        ("TTS.config.shared_configs", "BaseDatasetConfig"),
        ("TTS.tts.models.xtts", "XttsArgs"),
    )


# -- declarations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "inside", "outside"),
    [
        (coqui_tts.CoquiTTSPatch, ["0.19.0", "0.20.6", "0.21.3", "0.22.0"], ["0.18.2", "0.23.0"]),
        (coqui_tts_fork.CoquiTTSForkPatch, ["0.28.0", "0.28.3"], ["0.27.5", "0.29.0"]),
    ],
)
def test_version_ranges(patch: type[bc.Patch], inside: list[str], outside: list[str]) -> None:
    assert all(in_range(v, patch.supported) for v in inside)
    assert not any(in_range(v, patch.supported) for v in outside)


def test_both_patches_are_registered_and_fix_every_machine() -> None:
    by_name = {reg.name: reg for reg in engine.registrations(refresh=True)}
    for name, cls, distribution in (
        ("coqui_tts", coqui_tts.CoquiTTSPatch, "TTS"),
        ("coqui_tts_fork", coqui_tts_fork.CoquiTTSForkPatch, "coqui-tts"),
    ):
        reg = by_name[name]
        assert reg.builtin and reg.error is None
        assert isinstance(reg.patch, cls)
        assert reg.patch.distribution == distribution
        assert reg.patch.requires_affected is False
        assert reg.patch.modules == ("TTS.tts.models.xtts",)


def test_status_and_list_report_them_against_what_is_installed() -> None:
    states = {s.name: s for s in bc.status()}
    rows = {row["name"]: row for row in list_cmd.rows()}
    for name, distribution in (("coqui_tts", "TTS"), ("coqui_tts_fork", "coqui-tts")):
        version = installed_version(distribution)
        status, row = states[name], rows[name]
        assert status.distribution == distribution
        assert row["requires_affected"] is False
        if version is None:
            assert status.state == engine.SKIPPED
            assert status.reason == f"{distribution} is not installed"
            assert row["would_apply"] is False
        else:
            assert status.installed == version
            assert row["installed"] == version


def test_apply_without_the_library_never_imports_it() -> None:
    import sys

    report = bc.apply(only=["coqui_tts", "coqui_tts_fork"])
    for name, distribution in (("coqui_tts", "TTS"), ("coqui_tts_fork", "coqui-tts")):
        entry = next(e for e in report.entries if e.name == name)
        if installed_version(distribution) is None:
            assert entry.state == engine.SKIPPED
        elif "TTS.tts.models.xtts" not in sys.modules:
            assert entry.state == engine.PENDING
    if installed_version("TTS") is None and installed_version("coqui-tts") is None:
        assert "TTS" not in sys.modules
