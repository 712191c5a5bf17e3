"""Finding the NVRTC torch would load, without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from blackwell_compat.probing import TorchBuild, find_nvrtc, locate_torch
from blackwell_compat.probing.locate import parse_version_py

NO_ENV: dict[str, str] = {}


def make_site(root: Path, *, torch_cuda: str | None, version: str = "2.11.0") -> Path:
    """A site-packages folder holding a fake torch package (only what the probe reads)."""
    torch_dir = root / "torch"
    (torch_dir / "lib").mkdir(parents=True)
    (torch_dir / "__init__.py").write_text("raise ImportError('the probe must not import me')\n")
    cuda = repr(torch_cuda) if torch_cuda is not None else "None"
    (torch_dir / "version.py").write_text(
        "from typing import Optional\n"
        f"__version__ = '{version}'\n"
        "debug = False\n"
        f"cuda: Optional[str] = {cuda}\n"
    )
    return root


def link(target: str, at: Path) -> Path:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(target)
    return at


# -- torch's version.py ----------------------------------------------------------------------


def test_parse_version_py_forms():
    assert parse_version_py("__version__ = '2.11.0+cu130'\ncuda: Optional[str] = '13.0'\n") == (
        "2.11.0+cu130",
        "13.0",
        True,
    )
    assert parse_version_py('__version__ = "2.8.0"\ncuda = "12.8"\n') == ("2.8.0", "12.8", True)
    assert parse_version_py("__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\n") == (
        "2.13.0+cpu",
        None,
        True,
    )
    assert parse_version_py("something else\n") == (None, None, False)


def test_locate_torch_reads_files_only(tmp_path):
    site = make_site(tmp_path, torch_cuda="12.8", version="2.8.0+cu128")
    build = locate_torch([str(site)])
    assert build == TorchBuild(
        location=str(site / "torch"), version="2.8.0+cu128", cuda="12.8", error=None
    )
    assert build.cuda_major == 12 and build.cuda_minor == 8
    assert locate_torch([str(tmp_path / "empty")]) == TorchBuild()


def test_locate_torch_with_unreadable_version_file(tmp_path):
    site = make_site(tmp_path, torch_cuda="13.0")
    (site / "torch" / "version.py").write_text("garbage\n")
    build = locate_torch([str(site)])
    assert build.installed and build.cuda is None
    assert build.error is not None and "no 'cuda = ...' line" in build.error


# -- the search on fake layouts with real libraries ------------------------------------------


def test_cuda13_wheel_layout(tmp_path, nvrtc_libraries):
    site = make_site(tmp_path, torch_cuda="13.0")
    lib = link(nvrtc_libraries["13.0.88"], site / "nvidia" / "cu13" / "lib" / "libnvrtc.so.13")
    info = find_nvrtc([str(site)], env=NO_ENV)
    assert info.path == str(lib)
    assert info.version == (13, 0)
    assert "torch preload: sys.path[0]" in info.source
    assert [c.path for c in info.candidates if c.chosen] == [str(lib)]


def test_cuda12_wheel_layout(tmp_path, nvrtc_libraries):
    site = make_site(tmp_path, torch_cuda="12.8", version="2.8.0+cu128")
    lib = link(
        nvrtc_libraries["12.8.93"], site / "nvidia" / "cuda_nvrtc" / "lib" / "libnvrtc.so.12"
    )
    info = find_nvrtc([str(site)], env=NO_ENV)
    assert info.path == str(lib)
    assert info.version == (12, 8)
    assert info.jiterator_fails_for("sm_121") and not info.jiterator_fails_for("sm_120")


def test_stray_cuda12_library_next_to_cuda13_torch_is_passed_over(tmp_path, nvrtc_libraries):
    # torch globs nvidia/cuda_nvrtc first and preloads libnvrtc.so.12, but a CUDA 13 build
    # links libnvrtc.so.13, which the loader then finds through torch's RPATH.
    site = make_site(tmp_path, torch_cuda="13.0")
    stray = link(
        nvrtc_libraries["12.8.93"], site / "nvidia" / "cuda_nvrtc" / "lib" / "libnvrtc.so.12"
    )
    real = link(nvrtc_libraries["13.0.88"], site / "nvidia" / "cu13" / "lib" / "libnvrtc.so.13")
    info = find_nvrtc([str(site)], env=NO_ENV)
    assert info.path == str(real)
    assert info.version == (13, 0)
    by_path = {c.path: c for c in info.candidates}
    assert not by_path[str(stray)].chosen
    assert "links libnvrtc.so.13" in by_path[str(stray)].note
    assert by_path[str(real)].chosen


def test_first_sys_path_entry_with_a_match_wins(tmp_path, nvrtc_libraries):
    user = tmp_path / "user-site"
    first = link(
        nvrtc_libraries["12.9.86"], user / "nvidia" / "cuda_nvrtc" / "lib" / "libnvrtc.so.12"
    )
    site = make_site(tmp_path / "site", torch_cuda="12.8")
    second = link(
        nvrtc_libraries["12.8.93"], site / "nvidia" / "cuda_nvrtc" / "lib" / "libnvrtc.so.12"
    )
    info = find_nvrtc([str(tmp_path / "nothing"), str(user), str(site)], env=NO_ENV)
    assert info.path == str(first)
    assert info.version == (12, 9)
    assert not info.jiterator_fails_for("sm_121")
    assert "sys.path[1]" in info.source
    assert any(c.path == str(second) and not c.chosen for c in info.candidates)


def test_ld_library_path_when_no_wheel(tmp_path, nvrtc_libraries):
    site = make_site(tmp_path / "site", torch_cuda="12.6")
    folder = tmp_path / "cuda" / "lib64"
    lib = link(nvrtc_libraries["12.6.77"], folder / "libnvrtc.so.12")
    info = find_nvrtc([str(site)], env={"LD_LIBRARY_PATH": str(folder)}, in_process=False)
    assert info.path == str(lib)
    assert info.version == (12, 6)
    assert "LD_LIBRARY_PATH" in info.source


def test_cuda_home_comes_with_a_caveat(tmp_path, nvrtc_libraries):
    site = make_site(tmp_path / "site", torch_cuda="12.9")
    home = tmp_path / "cuda-12.9"
    lib = link(nvrtc_libraries["12.9.86"], home / "lib64" / "libnvrtc.so.12")
    info = find_nvrtc([str(site)], env={"CUDA_HOME": str(home)})
    if info.path != str(lib):  # a system CUDA in the ld.so cache comes first, correctly
        assert "ld.so cache" in info.source
        return
    assert info.version == (12, 9)
    assert "the loader does not search this folder" in info.source


def test_cpu_only_torch_is_said_so(tmp_path, nvrtc_libraries):
    site = make_site(tmp_path, torch_cuda=None, version="2.13.0+cpu")
    link(nvrtc_libraries["13.0.88"], site / "nvidia" / "cu13" / "lib" / "libnvrtc.so.13")
    info = find_nvrtc([str(site)], env=NO_ENV)
    assert "CPU-only build" in info.source
    # a CPU-only torch preloads nothing: the wheel in site-packages is not its NVRTC
    assert not any(c.origin.startswith("torch preload") for c in info.candidates)


def test_without_torch_the_wheel_is_still_reported(tmp_path, nvrtc_libraries):
    lib = link(
        nvrtc_libraries["12.8.93"], tmp_path / "nvidia" / "cuda_nvrtc" / "lib" / "libnvrtc.so.12"
    )
    info = find_nvrtc([str(tmp_path)], env=NO_ENV)
    assert info.path == str(lib)
    assert info.version == (12, 8)
    assert "torch is not installed" in info.source


def test_nothing_found_is_an_answer_not_an_exception(tmp_path):
    site = make_site(tmp_path, torch_cuda="13.0")
    info = find_nvrtc([str(site)], env=NO_ENV, torch=locate_torch([str(site)]))
    if info.path is None:
        assert info.error is not None and "no NVRTC library found" in info.error
        assert info.version is None
        assert not info.jiterator_fails_for("sm_121")
        assert any(not c.exists for c in info.candidates)
    else:  # this machine has a system CUDA 13 in the ld.so cache
        assert "ld.so cache" in info.source or "CUDA toolkit" in info.source


def test_broken_winner_is_reported_in_the_data(tmp_path):
    site = make_site(tmp_path, torch_cuda="12.8")
    broken = site / "nvidia" / "cuda_nvrtc" / "lib" / "libnvrtc.so.12"
    broken.parent.mkdir(parents=True)
    broken.write_text("not an ELF file\n")
    info = find_nvrtc([str(site)], env=NO_ENV)
    assert info.path == str(broken)
    assert info.version is None
    assert info.error is not None and "could not be loaded as a shared library" in info.error
    assert not info.jiterator_fails_for("sm_121")


def test_windows_layout_is_found_and_never_crashes(tmp_path):
    site = make_site(tmp_path, torch_cuda="12.8")
    dll = site / "torch" / "lib" / "nvrtc64_120_0.dll"
    dll.write_text("a Windows DLL cannot load here\n")
    (site / "torch" / "lib" / "nvrtc-builtins64_128.dll").write_text("builtins\n")
    info = find_nvrtc([str(site)], env={"PATH": ""}, system="win32")
    assert info.path == str(dll)
    assert "torch/lib" in info.source
    assert info.error is not None and "could not be loaded" in info.error
    assert [c.path for c in info.candidates] == [str(dll)]


# -- the real environment ---------------------------------------------------------------------


def _torch_site() -> Path:
    build = locate_torch()
    assert build.location is not None, "the test environment must have torch installed"
    return Path(build.location).parent


def test_finds_what_the_installed_torch_would_load():
    site = _torch_site()
    build = locate_torch([str(site)])
    info = find_nvrtc([str(site)], env=NO_ENV)
    if build.cuda_major is None:  # a CPU-only torch
        assert "CPU-only build" in info.source
        return
    major = build.cuda_major
    expected = (
        site / "nvidia" / f"cu{major}" / "lib" / f"libnvrtc.so.{major}"
        if major >= 13
        else site / "nvidia" / "cuda_nvrtc" / "lib" / f"libnvrtc.so.{major}"
    )
    assert info.path == str(expected)
    assert info.error is None
    assert info.version is not None and info.version[0] == major
    if build.version and build.version.startswith("2.11.0") and major == 13:
        # /work/venv-dev: torch 2.11.0+cu130 with nvidia-cuda-nvrtc 13.0
        assert info.version == (13, 0)
        assert "sm_121" in info.supported_archs


@pytest.mark.slow
def test_discovery_agrees_with_what_torch_actually_maps():
    """Import torch in a child and compare the NVRTC it mapped with the probe's answer."""
    code = textwrap.dedent(
        """
        import json, sys
        from blackwell_compat.probing import find_nvrtc
        before = find_nvrtc(sys.path, in_process=False, env={}).path
        import torch
        from blackwell_compat.probing.locate import _loaded_nvrtc
        after = find_nvrtc()
        print(json.dumps({"before": before, "mapped": _loaded_nvrtc(),
                          "after": after.path, "source": after.source,
                          "cuda": torch.version.cuda}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKWELL_COMPAT_")}
    env.pop("LD_LIBRARY_PATH", None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    data = json.loads(out.splitlines()[-1])
    if data["cuda"] is None:
        assert data["mapped"] == []
        return
    assert data["mapped"], "a CUDA torch preloads NVRTC at import"
    assert os.path.realpath(data["before"]) == os.path.realpath(data["mapped"][0])
    assert data["after"] == data["mapped"][0]
    assert "already loaded in this process" in data["source"]


# -- the working directory (issue 14, point 10) -------------------------------------------------


def planted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``work/nvidia/cu13/lib/libnvrtc.so.13`` (for a CUDA 13 torch; the CUDA 12 layout for a
    CUDA 12 one) whose constructor writes ``marker``."""
    from support import native_fakes

    work = tmp_path / "work"
    marker = tmp_path / "constructor-ran"
    library = native_fakes.build(
        "fake_nvrtc.c",
        work / native_fakes.nvrtc_relative_path(),
        f'CTOR_MARKER="{marker}"',
    )
    return work, library, marker


def cwd_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKWELL_COMPAT_")}
    env["BLACKWELL_COMPAT_CACHE_DIR"] = str(tmp_path / "verdicts")
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF libraries")
def test_planted_library_really_runs_its_constructor_when_loaded(tmp_path):
    # The check of the tests below: loading the planted library does write the marker.
    _, library, marker = planted(tmp_path)
    subprocess.run(
        [sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(library)!r})"], check=True
    )
    assert marker.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF libraries")
def test_probe_under_python_c_reports_the_cwd_library_and_never_loads_it(tmp_path):
    work, library, marker = planted(tmp_path)
    code = (
        "import json, blackwell_compat as bc\n"
        "p = bc.probe()\n"
        "print(json.dumps(p.nvrtc.as_dict()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=work,
        env=cwd_env(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    nvrtc = json.loads(done.stdout)
    assert not marker.exists(), "the probe loaded a library from the working directory"
    # torch in that interpreter would preload it ('' is on sys.path): the probe says so.
    assert nvrtc["path"] == str(library)
    chosen = [c for c in nvrtc["candidates"] if c["chosen"]]
    assert chosen and chosen[0]["working_directory"] is True
    assert "the working directory" in chosen[0]["origin"]
    assert nvrtc["error"].startswith("not read:") and nvrtc["version"] is None


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF libraries")
@pytest.mark.parametrize("command", [["list", "--json"], ["doctor", "--json", "--timeout", "120"]])
def test_cli_in_a_folder_with_a_planted_nvrtc_never_loads_it(tmp_path, command):
    work, library, marker = planted(tmp_path)
    # ... nor runs a planted ptxas (the doctor's Triton check runs ptxas binaries): a ./triton
    # package with a bundled one, and a ./nvidia/cu13/bin/ptxas like the pip wheels' layout.
    ptxas_marker = tmp_path / "ptxas-ran"
    (work / "triton").mkdir()
    (work / "triton" / "__init__.py").write_text("")
    for where in (
        work / "triton" / "backends" / "nvidia" / "bin",
        work / "nvidia" / "cu13" / "bin",
    ):
        where.mkdir(parents=True, exist_ok=True)
        script = where / "ptxas"
        script.write_text(f"#!/bin/sh\necho ran > '{ptxas_marker}'\necho ptxas\n")
        script.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", *command],
        cwd=work,
        env=cwd_env(tmp_path),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode in (0, 1), done.stderr
    json.loads(done.stdout)
    assert not marker.exists(), "a library in the working directory was loaded"
    assert not ptxas_marker.exists(), "a ptxas in the working directory was run"
    if command[0] == "doctor":
        report = json.loads(done.stdout)
        nvrtc = report["platform"]["nvrtc"]
        assert nvrtc["path"] != str(library)
        left_out = [c for c in nvrtc["candidates"] if c["path"] == str(library)]
        assert left_out and "left out" in left_out[0]["note"]


def test_relative_ld_library_path_entry_is_reported_not_loaded(tmp_path, monkeypatch):
    folder = tmp_path / "rel"
    folder.mkdir()
    (folder / "libnvrtc.so.13").write_bytes(b"\x7fELF not really")
    monkeypatch.chdir(tmp_path)
    site = make_site(tmp_path / "site", torch_cuda="13.0")
    info = find_nvrtc([str(site)], env={"LD_LIBRARY_PATH": "rel"}, in_process=False)
    assert info.path == str(folder / "libnvrtc.so.13")
    assert info.error is not None and info.error.startswith("not read:")
    assert info.candidates[-1].working_directory
