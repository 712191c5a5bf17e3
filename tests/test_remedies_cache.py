"""The compiler cache's layout: only folders with a manifest of the right kind count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blackwell_compat.remedies import cache


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BLACKWELL_COMPAT_CACHE_DIR", str(tmp_path))
    return tmp_path / "compilers"


def _entry(folder: Path, kind: str, **extra: object) -> None:
    folder.mkdir(parents=True)
    (folder / cache.MANIFEST).write_text(json.dumps({"kind": kind, **extra}))
    for name in extra.get("files", []):  # type: ignore[attr-defined]
        (folder / name).write_bytes(b"")


def test_layout_under_the_cache_folder(root: Path) -> None:
    assert cache.compilers_root() == root
    assert cache.kind_root("nvrtc", 12) == root / "nvrtc" / "cu12"
    assert cache.kind_root("ptxas") == root / "ptxas"
    assert cache.entry_folder("nvrtc", "12.9.86", 12) == root / "nvrtc" / "cu12" / "12.9.86"


def test_entries_newest_first_and_only_complete(root: Path) -> None:
    _entry(root / "nvrtc" / "cu12" / "12.8.93", "nvrtc", archs=["sm_120"], files=["a"])
    _entry(root / "nvrtc" / "cu12" / "12.10.1", "nvrtc")
    _entry(root / "nvrtc" / "cu12" / "12.9.86", "ptxas")  # wrong kind: not an entry
    (root / "nvrtc" / "cu12" / "12.11.0").mkdir()  # no manifest: half-done fetch
    (root / "nvrtc" / "cu12" / ".tmp-x").mkdir()
    bad = root / "nvrtc" / "cu12" / "12.12.0"
    bad.mkdir()
    (bad / cache.MANIFEST).write_text("{not json")
    found = cache.entries("nvrtc", 12)
    assert [e.version for e in found] == ["12.10.1", "12.8.93"]
    assert found[1].archs == ["sm_120"] and found[1].files == ["a"]
    assert cache.nvrtc_dirs(12) == [e.folder for e in found]
    assert cache.nvrtc_dirs(13) == []
    assert cache.ptxas_dirs() == []


@pytest.mark.parametrize(
    ("kind", "major", "message"),
    [
        ("nvcc", None, "not one of nvrtc, ptxas"),
        ("nvrtc", None, "CUDA major"),
        ("nvrtc", True, "CUDA major"),
        ("nvrtc", 10, "CUDA major"),
    ],
)
def test_bad_arguments_are_named(kind: str, major: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cache.kind_root(kind, major)  # type: ignore[arg-type]


def test_bad_version_is_named(root: Path) -> None:
    with pytest.raises(ValueError, match="dotted numbers"):
        cache.entry_folder("ptxas", "../x")
