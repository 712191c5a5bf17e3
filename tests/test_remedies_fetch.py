"""fetch: real wheels from the package index, a local wheel, and every way it must refuse
(corrupt file, wheel without the compiler, links, tampering, a compiler that fails its check,
no network, bad arguments), each leaving the cache untouched."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from support.compiler_wheels import NVRTC_CU13, PTXAS_CU12, download
from support.ptxas_tools import PTXAS_WHEEL_NAME, make_tool, make_wheel

from blackwell_compat.remedies import cache
from blackwell_compat.remedies.fetch import (
    FetchError,
    fetch,
    package_for,
    unpack,
    wheel_identity,
)


@pytest.fixture(scope="session")
def ptxas_wheel(tmp_path_factory) -> Path:
    return download(*PTXAS_CU12, tmp_path_factory.mktemp("ptxas-wheel"))


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("BLACKWELL_COMPAT_CACHE_DIR", str(root))
    return root


def compilers_listing(root: Path) -> list[str]:
    base = root / "compilers"
    return sorted(str(p.relative_to(root)) for p in base.rglob("*")) if base.exists() else []


@pytest.mark.slow
def test_fetch_ptxas_from_the_real_index_for_cuda12(cache_root):
    started = time.monotonic()
    result = fetch("ptxas", cuda_major=12, archs=["sm_121", "sm_120"])
    seconds = time.monotonic() - started
    folder = cache_root / "compilers" / "ptxas" / "12.9.86"
    assert result.folder == str(folder) and not result.reused
    assert result.package == "nvidia-cuda-nvcc-cu12" and result.version == "12.9.86"
    assert "pip download --no-deps" in result.origin
    assert result.files == ("bin/ptxas",)
    assert result.archs == ("sm_121a", "sm_120a")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "ptxas" and manifest["sha256"] == result.sha256
    assert len(result.sha256) == 64
    assert cache.ptxas_dirs() == [folder]
    assert os.access(folder / "bin" / "ptxas", os.X_OK)
    assert any("release 12.9" in line for line in result.checked)
    # only the compiler and the manifest: nothing else from the wheel
    assert compilers_listing(cache_root) == [
        "compilers/ptxas",
        "compilers/ptxas/12.9.86",
        "compilers/ptxas/12.9.86/bin",
        "compilers/ptxas/12.9.86/bin/ptxas",
        "compilers/ptxas/12.9.86/manifest.json",
    ]
    print(f"fetch ptxas cu12 (40.5 MB wheel) took {seconds:.1f} s")
    # a second call reuses the entry and downloads nothing
    again = fetch("ptxas", cuda_major=12, archs=["sm_121"])
    assert again.reused and again.sha256 == result.sha256


@pytest.mark.slow
def test_fetch_nvrtc_from_the_real_index_for_cuda13(cache_root):
    result = fetch("nvrtc", cuda_major=13, archs=["sm_120", "sm_121"])
    folder = cache_root / "compilers" / "nvrtc" / "cu13" / NVRTC_CU13[1]
    assert result.folder == str(folder)
    assert sorted(result.files) == ["libnvrtc-builtins.so.13.2", "libnvrtc.so.13"]
    assert {"sm_103", "sm_120", "sm_121"} <= set(result.archs)
    assert any("NVRTC 13.2" in line for line in result.checked)
    assert any("--gpu-architecture=sm_121" in line for line in result.checked)
    assert cache.nvrtc_dirs(13) == [folder]
    assert cache.read_manifest(folder)["package"] == "nvidia-cuda-nvrtc"


@pytest.mark.slow
def test_fetch_from_a_local_wheel_records_its_sha256(cache_root, ptxas_wheel):
    result = fetch("ptxas", cuda_major=12, wheel=ptxas_wheel, archs=["sm_121"])
    assert result.origin == f"local wheel {ptxas_wheel}"
    assert result.sha256 == hashlib.sha256(ptxas_wheel.read_bytes()).hexdigest()
    assert result.archs == ("sm_121a",)
    forced = fetch("ptxas", cuda_major=12, wheel=ptxas_wheel, archs=["sm_121"], force=True)
    assert not forced.reused and Path(forced.folder, "bin", "ptxas").is_file()
    assert [p.name for p in Path(forced.folder).parent.iterdir()] == ["12.9.86"]


@pytest.mark.slow
def test_a_truncated_wheel_is_refused_and_the_cache_untouched(cache_root, ptxas_wheel, tmp_path):
    broken = tmp_path / ptxas_wheel.name
    broken.write_bytes(ptxas_wheel.read_bytes()[: ptxas_wheel.stat().st_size // 2])
    with pytest.raises(FetchError, match="not a readable wheel"):
        fetch("ptxas", cuda_major=12, wheel=broken, archs=["sm_121"])
    assert compilers_listing(cache_root) == []


def test_a_file_that_is_no_zip_is_refused(cache_root, tmp_path):
    junk = tmp_path / PTXAS_WHEEL_NAME
    junk.write_bytes(b"this is not a zip archive\n" * 100)
    with pytest.raises(FetchError, match="not a readable wheel"):
        fetch("ptxas", cuda_major=12, wheel=junk, archs=["sm_121"])
    assert compilers_listing(cache_root) == []


def test_a_wheel_without_the_compiler_is_refused(cache_root, tmp_path):
    wheel = make_wheel(tmp_path / PTXAS_WHEEL_NAME, {"nvidia/cuda_nvcc/bin/nvcc": b"not ptxas"})
    with pytest.raises(FetchError, match=r"has no .*not a ptxas wheel for CUDA 12"):
        fetch("ptxas", cuda_major=12, wheel=wheel, archs=["sm_121"])
    assert compilers_listing(cache_root) == []


def test_a_link_in_place_of_the_compiler_is_refused(cache_root, tmp_path):
    wheel = make_wheel(
        tmp_path / PTXAS_WHEEL_NAME,
        {"nvidia/cuda_nvcc/bin/ptxas": b"/usr/bin/true"},
        links={"nvidia/cuda_nvcc/bin/ptxas"},
    )
    with pytest.raises(FetchError, match="is a link or a folder"):
        fetch("ptxas", cuda_major=12, wheel=wheel, archs=["sm_121"])
    assert compilers_listing(cache_root) == []


def test_content_that_does_not_match_the_record_is_refused(cache_root, tmp_path):
    record = "nvidia/cuda_nvcc/bin/ptxas,sha256=" + "A" * 43 + ",12\n"
    wheel = make_wheel(
        tmp_path / PTXAS_WHEEL_NAME, {"nvidia/cuda_nvcc/bin/ptxas": b"#!/bin/sh\n"}, record=record
    )
    with pytest.raises(FetchError, match="does not match the wheel's RECORD"):
        fetch("ptxas", cuda_major=12, wheel=wheel, archs=["sm_121"])
    assert compilers_listing(cache_root) == []


def test_a_ptxas_that_rejects_the_arch_fails_verification(cache_root, tmp_path):
    old = Path(make_tool(tmp_path / "tool" / "ptxas", "12.8", rejects=("sm_121a",)))
    wheel = make_wheel(
        tmp_path / PTXAS_WHEEL_NAME, {"nvidia/cuda_nvcc/bin/ptxas": old.read_bytes()}
    )
    with pytest.raises(FetchError, match=r"rejects sm_121a .*not defined for option 'gpu-name'"):
        fetch("ptxas", cuda_major=12, wheel=wheel, archs=["sm_121"])
    assert compilers_listing(cache_root) == []


def test_an_nvrtc_that_does_not_load_fails_verification(cache_root, tmp_path):
    name = "nvidia_cuda_nvrtc_cu12-12.9.86-py3-none-manylinux2010_x86_64.whl"
    wheel = make_wheel(
        tmp_path / name,
        {
            "nvidia/cuda_nvrtc/lib/libnvrtc.so.12": b"\x7fELF but not really",
            "nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.9": b"nor this",
        },
    )
    with pytest.raises(FetchError, match="the unpacked NVRTC"):
        fetch("nvrtc", cuda_major=12, wheel=wheel, archs=["sm_121"])
    assert compilers_listing(cache_root) == []


def test_no_network_is_a_clear_error_and_the_cache_is_untouched(cache_root, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_NO_INDEX", "0")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    with pytest.raises(FetchError) as caught:
        fetch("ptxas", cuda_major=12, version="12.9.41", archs=["sm_121"], timeout=300)
    text = str(caught.value)
    assert "pip download --no-deps" in text and "nvidia-cuda-nvcc-cu12==12.9.41" in text
    assert "--wheel FILE" in text
    assert compilers_listing(cache_root) == []


def test_a_wheel_of_the_wrong_package_or_major_is_refused(cache_root, tmp_path):
    wheel = make_wheel(tmp_path / PTXAS_WHEEL_NAME, {"nvidia/cuda_nvcc/bin/ptxas": b""})
    with pytest.raises(FetchError, match="is not an NVIDIA nvrtc wheel"):
        fetch("nvrtc", cuda_major=12, wheel=wheel, archs=["sm_121"])
    with pytest.raises(FetchError, match="is not a CUDA 13 release"):
        fetch("ptxas", cuda_major=13, wheel=wheel, archs=["sm_121"])
    with pytest.raises(FetchError, match="no such file"):
        fetch("ptxas", cuda_major=12, wheel=tmp_path / "missing.whl")
    assert compilers_listing(cache_root) == []


def test_bad_arguments_name_what_is_accepted():
    assert package_for("nvrtc", 12) == ("nvidia-cuda-nvrtc-cu12", "12.9.86")
    assert package_for("ptxas", 13) == ("nvidia-cuda-nvcc", "13.2.86")
    assert package_for("ptxas", 12, "12.9.41") == ("nvidia-cuda-nvcc-cu12", "12.9.41")
    with pytest.raises(FetchError, match="give one of nvrtc, ptxas"):
        package_for("nvcc", 12)
    with pytest.raises(FetchError, match="known: CUDA 12, CUDA 13"):
        package_for("nvrtc", 11)
    with pytest.raises(FetchError, match="dotted numbers"):
        package_for("nvrtc", 12, "latest")
    with pytest.raises(FetchError, match="not a wheel file name"):
        wheel_identity(Path("ptxas.zip"), "ptxas")


def test_unpack_takes_only_the_compiler(tmp_path):
    wheel = make_wheel(
        tmp_path / PTXAS_WHEEL_NAME,
        {
            "nvidia/cuda_nvcc/bin/ptxas": b"binary",
            "nvidia/cuda_nvcc/bin/nvcc": b"other",
            "../../escape": b"never written",
        },
    )
    into = tmp_path / "out"
    into.mkdir()
    assert unpack(wheel, "ptxas", 12, into) == ["bin/ptxas"]
    assert sorted(str(p.relative_to(into)) for p in into.rglob("*")) == ["bin", "bin/ptxas"]
    assert not (tmp_path.parent / "escape").exists()


def test_zip_member_check_reads_the_record_hash(tmp_path):
    data = b"#!/bin/sh\nexit 0\n"
    import base64

    good = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    wheel = make_wheel(
        tmp_path / PTXAS_WHEEL_NAME,
        {"nvidia/cuda_nvcc/bin/ptxas": data},
        record=f"nvidia/cuda_nvcc/bin/ptxas,sha256={good},{len(data)}\n",
    )
    into = tmp_path / "out"
    into.mkdir()
    assert unpack(wheel, "ptxas", 12, into) == ["bin/ptxas"]
    assert (into / "bin" / "ptxas").read_bytes() == data
