"""blackwell_compat.trusted: only folders this user owns, files read safely, absolute paths.

Issue 21: another uid's library was loaded from a shared ``BLACKWELL_COMPAT_CACHE_DIR`` (mode
1777), from a ``~/.cache/blackwell-compat`` linked to another user's folder and, without HOME,
from ``<tmp>/.cache/blackwell-compat``, which every user shares; a FIFO named ``manifest.json``
hung every AUTO=1 program.  The tests run as root in CI; "another uid" is uid 65534 there (a
folder given to it with chown), and, run by any other user, a folder others can write to.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from blackwell_compat import config, trusted
from blackwell_compat.errors import ConfigError
from blackwell_compat.remedies import cache

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX owners and modes")
OTHER_UID = 65534  # nobody


def _give_away(folder: Path) -> str:
    """Make *folder* another user's (root: chown to nobody) or, run by anyone else, writable
    by everyone: either way a folder this user does not control.  What the refusal says."""
    if os.geteuid() == 0:
        os.chown(folder, OTHER_UID, OTHER_UID)
        return f"belongs to uid {OTHER_UID}"
    folder.chmod(0o777)
    return "can be written by other users"


def _plant_entry(root: Path, version: str = "12.9.86") -> Path:
    """A complete-looking NVRTC entry of the compiler cache under *root* (the cache folder)."""
    entry = root / "compilers" / "nvrtc" / "cu12" / version
    entry.mkdir(parents=True)
    (entry / "libnvrtc.so.12").write_bytes(b"\x7fELF planted")
    manifest = {"kind": "nvrtc", "files": ["libnvrtc.so.12"], "archs": ["sm_121"]}
    (entry / "manifest.json").write_text(json.dumps(manifest))
    return entry


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """A temporary folder of the test's own, for the private fallback."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# -- folders ----------------------------------------------------------------------------------


@linux
def test_a_folder_of_this_user_is_trusted(tmp_path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    assert trusted.folder_problem(mine) is None
    assert trusted.folder_problem(mine / "not" / "yet") is None  # judged where it would be made


@linux
def test_a_shared_cache_folder_is_refused_and_a_private_fallback_used(
    tmp_path, private_tmp, monkeypatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    _plant_entry(shared)  # another user's "NVRTC" in a folder everybody may write to
    shared.chmod(0o1777)
    monkeypatch.setenv(config.CACHE_DIR, str(shared))
    problem = trusted.folder_problem(shared)
    assert problem is not None and "mode 1777" in problem and "written by other users" in problem
    folders = trusted.cache_folders()
    assert shared not in folders.usable
    assert folders.usable == (private_tmp / f"blackwell-compat-{os.getuid()}",)
    assert any("is refused" in line and str(shared) in line for line in folders.refused)
    assert cache.nvrtc_dirs(12) == []  # the planted entry is never a candidate


@linux
def test_a_folder_of_another_user_is_refused(tmp_path, private_tmp, monkeypatch) -> None:
    theirs = tmp_path / "theirs"
    _plant_entry(theirs)
    why = _give_away(theirs)
    monkeypatch.setenv(config.CACHE_DIR, str(theirs))
    problem = trusted.folder_problem(theirs)
    assert problem is not None and why in problem
    assert cache.nvrtc_dirs(12) == []


@linux
def test_a_cache_linked_to_another_users_folder_is_refused(
    tmp_path, private_tmp, monkeypatch
) -> None:
    theirs = tmp_path / "theirs"
    _plant_entry(theirs)
    why = _give_away(theirs)
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    (home / ".cache" / "blackwell-compat").symlink_to(theirs)  # links resolved
    monkeypatch.delenv(config.CACHE_DIR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    problem = trusted.folder_problem(home / ".cache" / "blackwell-compat")
    assert problem is not None and why in problem and str(theirs) in problem
    assert cache.nvrtc_dirs(12) == []
    assert trusted.cache_folders().usable == (private_tmp / f"blackwell-compat-{os.getuid()}",)


@linux
def test_a_folder_above_that_others_can_write_to_is_refused_unless_sticky(tmp_path) -> None:
    above = tmp_path / "above"
    mine = above / "mine"
    mine.mkdir(parents=True, mode=0o700)
    above.chmod(0o777)  # anyone could rename "mine" away and put their own folder there
    problem = trusted.folder_problem(mine)
    assert problem is not None and f"{above} has mode 0777" in problem
    above.chmod(0o1777)  # sticky, as /tmp: only the owner of "mine" may move it
    assert trusted.folder_problem(mine) is None


@linux
def test_the_private_fallback_is_made_private_and_one_of_someone_else_is_refused(
    private_tmp, monkeypatch
) -> None:
    monkeypatch.setenv(config.CACHE_DIR, "relative-cache")  # refused: nothing configured
    fallback = private_tmp / f"blackwell-compat-{os.getuid()}"
    made = trusted.make_private_folder(fallback)
    st = made.stat()
    assert st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
    fallback.rmdir()
    fallback.mkdir(mode=0o700)
    why = _give_away(fallback)  # someone made it first, for themselves
    folders = trusted.cache_folders()
    assert folders.usable == ()
    assert any("private fallback" in line and why in line for line in folders.refused)


@linux
def test_no_home_means_the_private_fallback_never_a_shared_folder(private_tmp, monkeypatch) -> None:
    import pwd

    def no_entry(uid):
        raise KeyError(uid)

    for name in (config.CACHE_DIR, "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    configured, why = trusted.configured_cache()
    assert configured is None and why is not None and "no usable home" in why
    assert trusted.cache_folders().usable == (private_tmp / f"blackwell-compat-{os.getuid()}",)
    monkeypatch.setenv("HOME", "relative/home")  # a relative HOME is no home either
    assert trusted.configured_cache()[0] is None


# -- files --------------------------------------------------------------------------------------


@linux
def test_a_fifo_named_manifest_is_no_entry_and_never_a_hang(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(config.CACHE_DIR, str(tmp_path / "cache"))
    entry = tmp_path / "cache" / "compilers" / "nvrtc" / "cu12" / "12.9.86"
    entry.mkdir(parents=True, mode=0o700)
    os.mkfifo(entry / "manifest.json")  # nobody ever writes: a blocking open waits for ever
    done: list[object] = []
    reader = threading.Thread(target=lambda: done.append(cache.nvrtc_dirs(12)), daemon=True)
    started = time.monotonic()
    reader.start()
    reader.join(10)
    assert done == [[]], "reading the cache hung on a FIFO"
    assert time.monotonic() - started < 10
    with pytest.raises(trusted.FileRefused, match="not a regular file"):
        trusted.read_file(entry / "manifest.json", 1024)


@linux
def test_links_devices_and_huge_files_are_refused(tmp_path) -> None:
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "manifest.json"
    link.symlink_to(real)
    with pytest.raises(trusted.FileRefused, match="is a link"):
        trusted.read_file(link, 1024)
    with pytest.raises(trusted.FileRefused, match="not a regular file"):
        trusted.read_file("/dev/zero", 1024)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2048)
    with pytest.raises(trusted.FileRefused, match="2048 bytes, more than 1024"):
        trusted.read_file(big, 1024)
    assert trusted.read_file(real, 1024) == b"{}"


def test_an_entry_whose_library_is_a_link_is_no_entry(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(config.CACHE_DIR, str(tmp_path / "cache"))
    entry = _plant_entry(tmp_path / "cache")
    assert cache.nvrtc_dirs(12) == [entry]
    (entry / "libnvrtc.so.12").unlink()
    (entry / "libnvrtc.so.12").symlink_to("/usr/lib/x86_64-linux-gnu/libc.so.6")
    assert cache.nvrtc_dirs(12) == []


# -- paths from the environment -------------------------------------------------------------------


@pytest.mark.parametrize("name", [config.CACHE_DIR, config.NVRTC, config.PTXAS])
def test_relative_path_variables_are_refused(name, monkeypatch) -> None:
    monkeypatch.setenv(name, "rel/lib")
    with pytest.raises(ConfigError, match=rf"{name}='rel/lib' is a relative path"):
        config.absolute_path(name)
    problems = config.environment_problems({})
    assert any(p.startswith(f"{name}='rel/lib' is a relative path") for p in problems)
    monkeypatch.setenv(name, "~/cache")
    assert config.absolute_path(name) == os.path.expanduser("~/cache")


def test_relative_toolkit_folders_are_not_used() -> None:
    roots, refused = trusted.toolkit_roots({"CUDA_HOME": ".", "CUDA_PATH": "/opt/cuda"})
    assert roots == [("CUDA_PATH", "/opt/cuda")]
    assert refused == [
        "CUDA_HOME='.' is a relative path: not used (it would name a different folder in every "
        "working directory)"
    ]


@linux
def test_tools_are_found_through_absolute_path_entries_only(tmp_path, monkeypatch) -> None:
    tool = tmp_path / "ptxas"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    # PATH="$EXTRA:$PATH" with EXTRA unset gives an empty first entry: the working directory.
    assert trusted.find_tool("ptxas", ":/nonexistent") is None
    assert trusted.find_tool("ptxas", ".:bin") is None
    assert trusted.find_tool("ptxas", f":{tmp_path}") == str(tool)


def test_apply_refuses_a_relative_path_variable(monkeypatch) -> None:
    import blackwell_compat as bc

    monkeypatch.setenv(config.CACHE_DIR, "rel-cache")
    with pytest.raises(ConfigError, match="BLACKWELL_COMPAT_CACHE_DIR='rel-cache' is a relative"):
        bc.apply()
    monkeypatch.setenv(config.CACHE_DIR, os.path.abspath("elsewhere"))
    monkeypatch.setenv(config.NVRTC, "rel/lib")
    with pytest.raises(ConfigError, match="BLACKWELL_COMPAT_NVRTC='rel/lib' is a relative"):
        bc.apply()
