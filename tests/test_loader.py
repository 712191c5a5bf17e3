"""blackwell_compat.loader: the dynamic loader's facts, read without loading anything new."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import pytest
from support.native_fakes import build

from blackwell_compat import loader

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the loader is Linux's")


def test_read_needed_lists_what_a_library_links(nvrtc_libraries: dict[str, str]) -> None:
    library = nvrtc_libraries["12.9.86"]
    assert loader.read_soname(library) == "libnvrtc.so.12"
    needed = loader.read_needed(library)
    assert "libc.so.6" in needed
    assert "libnvrtc.so.12" not in needed
    assert loader.read_needed(__file__) == [] and loader.read_soname(__file__) is None


def test_soname_is_read_from_the_file(nvrtc_libraries: dict[str, str], tmp_path: Path) -> None:
    assert loader.read_soname(nvrtc_libraries["12.9.86"]) == "libnvrtc.so.12"
    assert loader.read_soname(nvrtc_libraries["13.0.88"]) == "libnvrtc.so.13"
    junk = tmp_path / "libnvrtc.so.12"
    junk.write_bytes(b"\x7fELF\x02\x01" + b"\0" * 40)
    assert loader.read_soname(str(junk)) is None
    assert loader.read_soname(str(tmp_path / "missing")) is None


@linux
def test_the_elf_reader_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "libnvrtc.so.12"
    os.mkfifo(fifo)  # nobody writes: an open without O_NONBLOCK would wait for ever
    assert loader.read_soname(str(fifo)) is None and loader.read_needed(str(fifo)) == []


def test_same_file_has_one_rule_for_paths_that_cannot_be_read(tmp_path: Path) -> None:
    real = tmp_path / "lib.so"
    real.write_bytes(b"x")
    link = tmp_path / "link.so"
    link.symlink_to(real)
    assert loader.same_file(str(real), str(link))
    assert not loader.same_file(str(real), __file__)
    # Unreadable (here: vanished) paths are the same file when they resolve to the same name,
    # whichever argument is the unreadable one, and a link to a vanished file resolves too.
    gone = tmp_path / "gone.so"
    dangling = tmp_path / "dangling.so"
    dangling.symlink_to(gone)
    assert loader.same_file(str(gone), str(tmp_path / "." / "gone.so"))
    assert loader.same_file(str(dangling), str(gone)) and loader.same_file(str(gone), str(dangling))
    assert not loader.same_file(str(gone), str(real)) and not loader.same_file(str(real), str(gone))


@linux
def test_mapped_files_and_what_dlopen_returns(tmp_path: Path) -> None:
    # A folder whose name holds a newline: the kernel writes it as \012 in /proc/self/maps.
    folder = tmp_path / "odd\nname"
    library = build("fake_nvrtc.c", folder / "libbcloadertest.so.7", soname="libbcloadertest.so.7")
    handle = loader.dlopen(str(library))
    try:
        assert str(library) in loader.mapped_files("libbcloadertest")
        assert loader.is_mapped(str(library))
        assert loader.bound_library("libbcloadertest.so.7") == str(library)
        assert loader.loaded_path(handle) == os.path.realpath(library)
    finally:
        loader.dlclose(handle)
    assert loader.bound_library("libbcloadertest-never-loaded.so.1") is None


@linux
def test_linked_by_reads_the_mapped_libraries_needs() -> None:
    libm = ctypes.CDLL("libm.so.6")  # noqa: F841 - mapped for the duration of the test
    linking = loader.linked_by("libc.so.6")
    assert any(os.path.basename(p).startswith("libm") for p in linking)


def test_dlopen_flags_bind_everything_at_load_time() -> None:
    if hasattr(os, "RTLD_NOW"):
        assert loader.DLOPEN_FLAGS & os.RTLD_NOW and loader.DLOPEN_FLAGS & os.RTLD_LOCAL == (
            os.RTLD_LOCAL
        )
