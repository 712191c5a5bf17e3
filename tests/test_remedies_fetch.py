"""fetch: real wheels from the package index, a local wheel, and every way it must refuse
(corrupt file, wheel without the compiler, links, tampering, a compiler that fails its check,
no network, bad arguments), each leaving the cache untouched."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from support import native_fakes
from support.compiler_wheels import NVRTC_CU13, PTXAS_CU12, download
from support.crafted_wheels import (
    BUILD_TAG,
    PACKAGE,
    SPECIFIC_TAG,
    VERSION,
    crafted_nvrtc_wheel,
    fake_nvrtc,
    wheel,
)
from support.ptxas_tools import PTXAS_WHEEL_NAME, make_tool, make_wheel

from blackwell_compat.probing.locate import TorchBuild
from blackwell_compat.remedies import cache, pinned
from blackwell_compat.remedies import nvrtc as nvrtc_remedy
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
    """Everything under ``<cache>/compilers`` but the fetch lock and the folders holding it
    (a fetch that fails leaves no entry, no file, no work folder)."""
    base = root / "compilers"
    if not base.exists():
        return []
    shown: set[str] = set()
    for path in base.rglob("*"):
        if path.name == ".fetch.lock" or (path.is_dir() and not path.is_symlink()):
            continue
        shown.add(str(path.relative_to(root)))
        for parent in path.relative_to(root).parents:
            if str(parent) not in (".", "compilers"):
                shown.add(str(parent))
    if shown:
        shown.add("compilers")
    return sorted(shown - {"compilers"})


def sha(path: Path) -> str:
    """The sha256 a test names with trust_sha256 to get a crafted wheel past the pin check."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    assert sorted(p.name for p in Path(forced.folder).parent.iterdir()) == [
        ".fetch.lock",
        "12.9.86",
    ]
    assert result.pinned and "nvidia_cuda_nvcc_cu12-12.9.86" in result.trust


@pytest.mark.slow
def test_a_truncated_wheel_is_refused_and_the_cache_untouched(cache_root, ptxas_wheel, tmp_path):
    broken = tmp_path / ptxas_wheel.name
    broken.write_bytes(ptxas_wheel.read_bytes()[: ptxas_wheel.stat().st_size // 2])
    expected = [w for w in pinned.pinned_for(*PTXAS_CU12) if w.machine == pinned.machine()]
    with pytest.raises(
        FetchError, match=rf"got sha256 {sha(broken)}, expected {expected[0].sha256}"
    ):
        fetch("ptxas", cuda_major=12, wheel=broken, archs=["sm_121"])
    with pytest.raises(FetchError, match="not a readable wheel"):
        fetch("ptxas", cuda_major=12, wheel=broken, archs=["sm_121"], trust_sha256=sha(broken))
    assert compilers_listing(cache_root) == []


def test_a_file_that_is_no_zip_is_refused(cache_root, tmp_path):
    junk = tmp_path / PTXAS_WHEEL_NAME
    junk.write_bytes(b"this is not a zip archive\n" * 100)
    with pytest.raises(FetchError, match="not a readable wheel"):
        fetch("ptxas", cuda_major=12, wheel=junk, archs=["sm_121"], trust_sha256=sha(junk))
    assert compilers_listing(cache_root) == []


def test_a_wheel_without_the_compiler_is_refused(cache_root, tmp_path):
    wheel = make_wheel(tmp_path / PTXAS_WHEEL_NAME, {"nvidia/cuda_nvcc/bin/nvcc": b"not ptxas"})
    with pytest.raises(FetchError, match=r"has no .*not a ptxas wheel for CUDA 12"):
        fetch("ptxas", cuda_major=12, wheel=wheel, archs=["sm_121"], trust_sha256=sha(wheel))
    assert compilers_listing(cache_root) == []


def test_a_link_in_place_of_the_compiler_is_refused(cache_root, tmp_path):
    wheel = make_wheel(
        tmp_path / PTXAS_WHEEL_NAME,
        {"nvidia/cuda_nvcc/bin/ptxas": b"/usr/bin/true"},
        links={"nvidia/cuda_nvcc/bin/ptxas"},
    )
    with pytest.raises(FetchError, match="is a link or a folder"):
        fetch("ptxas", cuda_major=12, wheel=wheel, archs=["sm_121"], trust_sha256=sha(wheel))
    assert compilers_listing(cache_root) == []


def test_content_that_does_not_match_the_record_is_refused(cache_root, tmp_path):
    record = "nvidia/cuda_nvcc/bin/ptxas,sha256=" + "A" * 43 + ",12\n"
    wheel = make_wheel(
        tmp_path / PTXAS_WHEEL_NAME, {"nvidia/cuda_nvcc/bin/ptxas": b"#!/bin/sh\n"}, record=record
    )
    with pytest.raises(FetchError, match="does not match the wheel's RECORD"):
        fetch("ptxas", cuda_major=12, wheel=wheel, archs=["sm_121"], trust_sha256=sha(wheel))
    assert compilers_listing(cache_root) == []


def test_a_ptxas_that_rejects_the_arch_fails_verification(cache_root, tmp_path):
    old = Path(make_tool(tmp_path / "tool" / "ptxas", "12.8", rejects=("sm_121a",)))
    wheel = make_wheel(
        tmp_path / PTXAS_WHEEL_NAME, {"nvidia/cuda_nvcc/bin/ptxas": old.read_bytes()}
    )
    with pytest.raises(FetchError, match=r"rejects sm_121a .*not defined for option 'gpu-name'"):
        fetch("ptxas", cuda_major=12, wheel=wheel, archs=["sm_121"], trust_sha256=sha(wheel))
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
        fetch("nvrtc", cuda_major=12, wheel=wheel, archs=["sm_121"], trust_sha256=sha(wheel))
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
    with pytest.raises(FetchError) as caught:  # an unpinned release needs the user's sha256
        fetch(
            "ptxas",
            cuda_major=12,
            version="12.9.41",
            archs=["sm_121"],
            timeout=300,
            trust_sha256="0" * 64,
        )
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


# -- trust: NVIDIA's pinned bytes only (issue 21) ------------------------------------------------


def _expected() -> pinned.PinnedWheel:
    here = pinned.machine()
    return next(w for w in pinned.pinned_for(PACKAGE, VERSION) if w.machine == here)


@pytest.fixture
def only_find_links(tmp_path, monkeypatch) -> Path:
    """pip sees nothing but a find-links folder of the test's own (no index, no config)."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    return links


@pytest.mark.parametrize(
    ("tag", "build_tag"),
    [(SPECIFIC_TAG, None), (BUILD_TAG[1], BUILD_TAG[0])],
    ids=["more-specific-platform-tag", "build-tag"],
)
def test_a_crafted_find_links_wheel_is_refused(
    cache_root, only_find_links, tmp_path, tag, build_tag
):
    """pip prefers a wheel with NVIDIA's name and version and a more specific platform tag or
    a build tag; before, fetch printed "verified", cached it, and every AUTO=1 program loaded
    it (its constructor ran).  Now pip (--require-hashes) and fetch refuse its bytes, naming
    what they got and what NVIDIA published, and nothing of it ever runs."""
    marker = tmp_path / "constructor-ran"
    crafted = crafted_nvrtc_wheel(
        only_find_links, tmp_path / "build", marker=marker, tag=tag, build_tag=build_tag
    )
    with pytest.raises(FetchError) as caught:
        fetch("nvrtc", cuda_major=12, archs=["sm_120", "sm_121"], timeout=300)
    text = str(caught.value)
    assert f"whose sha256 is {sha(crafted)}" in text and crafted.name in text
    assert f"expected {_expected().sha256}" in text and "not NVIDIA's published wheel" in text
    assert compilers_listing(cache_root) == []
    assert not marker.exists()  # never loaded, not even in a test process


def test_a_crafted_wheel_given_with_wheel_is_refused(cache_root, tmp_path):
    marker = tmp_path / "constructor-ran"
    crafted = crafted_nvrtc_wheel(tmp_path / "w", tmp_path / "build", marker=marker)
    with pytest.raises(FetchError) as caught:
        fetch("nvrtc", cuda_major=12, wheel=crafted, archs=["sm_121"])
    expected = _expected()
    assert str(caught.value) == (
        f"{crafted.name}: got sha256 {sha(crafted)}, expected {expected.sha256} "
        f"({expected.filename}, NVIDIA's published {PACKAGE}=={VERSION} for "
        f"{expected.machine}): not NVIDIA's wheel; refused, nothing was unpacked"
    )
    assert compilers_listing(cache_root) == [] and not marker.exists()


def test_the_override_takes_the_named_wheel_only_and_records_it(cache_root, tmp_path):
    crafted = crafted_nvrtc_wheel(tmp_path / "w", tmp_path / "build")
    with pytest.raises(FetchError, match=rf"got sha256 {sha(crafted)}, expected {'1' * 64}"):
        fetch("nvrtc", cuda_major=12, wheel=crafted, archs=["sm_121"], trust_sha256="1" * 64)
    with pytest.raises(FetchError, match="is not a SHA-256: give the 64 hexadecimal digits"):
        fetch("nvrtc", cuda_major=12, wheel=crafted, archs=["sm_121"], trust_sha256="abc")
    result = fetch(
        "nvrtc", cuda_major=12, wheel=crafted, archs=["sm_121"], trust_sha256=sha(crafted)
    )
    assert not result.pinned and "named by the user (--trust-sha256)" in result.trust
    manifest = cache.read_manifest(Path(result.folder))
    assert manifest is not None and manifest["pinned"] is False
    assert manifest["trust"] == result.trust and manifest["sha256"] == sha(crafted)
    # An unpinned release is refused before anything is downloaded, and says how to proceed.
    with pytest.raises(FetchError, match=r"pins no sha256 for nvidia-cuda-nvrtc-cu12==12\.9\.41"):
        fetch("nvrtc", cuda_major=12, version="12.9.41", archs=["sm_121"])


def test_nvidias_wheel_for_another_machine_is_refused(cache_root, ptxas_wheel, monkeypatch):
    other = "aarch64" if pinned.machine() == "x86_64" else "x86_64"
    monkeypatch.setattr(pinned, "machine", lambda: other)
    with pytest.raises(FetchError, match=rf"is NVIDIA's wheel for .*; this machine is {other}"):
        fetch("ptxas", cuda_major=12, wheel=ptxas_wheel, archs=["sm_121"])
    assert compilers_listing(cache_root) == []


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("corrupt-builtins", "fails what the NVRTC remedy checks: "),
        ("cuda13-soname", "its soname is 'libnvrtc.so.13', torch opens 'libnvrtc.so.12'"),
        ("huge-builtins", "is 67108864 bytes; NVIDIA's is at most 7202760"),
    ],
)
def test_fetch_checks_everything_the_remedy_checks(cache_root, tmp_path, case, message):
    """Before, fetch called these "verified" and the remedy then rejected them (and said "run
    fetch", which said "already in the cache")."""
    kwargs: dict = {}
    if case == "corrupt-builtins":
        kwargs["builtins"] = b"\x7fELF" + b"\x00" * 4000
    elif case == "cuda13-soname":
        kwargs["soname"] = "libnvrtc.so.13"
    else:
        kwargs["builtins"] = b"\x00" * (64 << 20)  # compresses to almost nothing
    crafted = crafted_nvrtc_wheel(tmp_path / "w", tmp_path / "build", **kwargs)
    with pytest.raises(FetchError) as caught:
        fetch("nvrtc", cuda_major=12, wheel=crafted, archs=["sm_121"], trust_sha256=sha(crafted))
    assert message in str(caught.value)
    assert compilers_listing(cache_root) == []


def test_a_broken_cached_entry_has_one_way_out(cache_root, tmp_path):
    crafted = crafted_nvrtc_wheel(tmp_path / "w", tmp_path / "build")
    args = {"cuda_major": 12, "wheel": crafted, "archs": ["sm_121"], "trust_sha256": sha(crafted)}
    first = fetch("nvrtc", **args)
    folder = Path(first.folder)
    (folder / "libnvrtc-builtins.so.12.9").write_bytes(b"damaged on disk")
    # The remedy passes over it and names the way out ...
    ok, _, _ = nvrtc_remedy.judge(str(folder / "libnvrtc.so.12"), "libnvrtc.so.12", ["sm_121"])
    assert not ok
    found = nvrtc_remedy.find_capable(
        ["sm_121"], TorchBuild(location="/x", version="2.6.0", cuda="12.4"), env={}
    )
    verdicts = [c.verdict for c in found[1] if "the project's cache" in c.origin]
    assert verdicts and verdicts[0].endswith(
        "`python -m blackwell_compat fetch nvrtc` replaces this cached copy"
    )
    # ... and fetch, which used to answer "already in the cache", takes it.
    again = fetch("nvrtc", **args)
    assert not again.reused
    assert any("was broken" in note and "fetched it again" in note for note in again.notes)
    assert (folder / "libnvrtc-builtins.so.12.9").read_bytes() != b"damaged on disk"
    assert fetch("nvrtc", **args).reused  # a working entry is "already in the cache"


def _fetch_command(wheel: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "blackwell_compat", "fetch", "nvrtc", "--cuda", "12"]
    argv += ["--wheel", str(wheel), "--trust-sha256", sha(wheel)]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.slow
def test_two_fetches_at_once_both_end_well(cache_root, tmp_path):
    crafted = crafted_nvrtc_wheel(tmp_path / "w", tmp_path / "build")
    env = dict(os.environ, BLACKWELL_COMPAT_CACHE_DIR=str(cache_root))
    for _ in range(3):  # the race of the old code needed a few tries; none may fail now
        shutil.rmtree(cache_root, ignore_errors=True)
        runs = [_fetch_command(crafted, env) for _ in range(2)]
        outputs = [run.communicate(timeout=300) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        said = sorted("already in the cache" in out for out, _ in outputs)
        assert said == [False, True], outputs
        assert [e.version for e in cache.entries("nvrtc", 12)] == [VERSION]


@pytest.mark.slow
def test_what_a_killed_fetch_left_is_removed_by_the_next(cache_root, tmp_path):
    """A fetch killed while it checks a library (here: one that hangs) left its temporary
    folders behind for ever (up to ~300 MB); its test process lived on, too."""
    hanging = crafted_nvrtc_wheel(tmp_path / "hang", tmp_path / "b1", tag=SPECIFIC_TAG)
    with zipfile.ZipFile(hanging) as archive:
        members = {n: archive.read(n) for n in archive.namelist() if not n.endswith("RECORD")}
    members["nvidia/cuda_nvrtc/lib/libnvrtc.so.12"] = fake_nvrtc(
        tmp_path / "b2", "CALL_HANG"
    ).read_bytes()
    hanging.unlink()
    hanging = wheel(tmp_path / "hang", {k: v for k, v in members.items() if "dist-info" not in k})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = dict(os.environ, BLACKWELL_COMPAT_CACHE_DIR=str(cache_root), TMPDIR=str(scratch))
    run = _fetch_command(hanging, env)
    kind = cache_root / "compilers" / "nvrtc" / "cu12"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if list(kind.glob(".fetch-*/entry/libnvrtc.so.12")) and _test_children(kind):
            break
        time.sleep(0.1)
    else:
        run.kill()
        pytest.fail("the fetch never reached its check: " + str(run.communicate()))
    children = _test_children(kind)
    run.kill()
    run.communicate()
    assert all(_gone(pid) for pid in children), "the hanging test process outlived fetch"
    (kind / f".{VERSION}-new-abcd").mkdir()  # as a kill during the final rename leaves it
    left = sorted(p.name for p in kind.iterdir() if p.name != ".fetch.lock")
    assert any(name.startswith(".fetch-") for name in left)
    good = crafted_nvrtc_wheel(tmp_path / "good", tmp_path / "b3")
    result = fetch("nvrtc", cuda_major=12, wheel=good, archs=["sm_121"], trust_sha256=sha(good))
    assert any(note.startswith("removed what an interrupted fetch left") for note in result.notes)
    assert sorted(p.name for p in kind.iterdir()) == [".fetch.lock", VERSION]
    assert list(scratch.iterdir()) == [] or all(
        p.name.startswith("bc-child-") for p in scratch.iterdir()
    )


def _test_children(folder: Path) -> list[int]:
    """Processes whose command line names a file under *folder* (the test processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline and "child_main" in cmdline:
            found.append(int(entry.name))
    return found


def _gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_a_full_disk_is_one_line(cache_root, tmp_path):
    """Before: a 28-line traceback (and a write error reported as a read error)."""
    crafted = crafted_nvrtc_wheel(tmp_path / "w", tmp_path / "build")
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"  # writes past 4 KiB fail
        "from blackwell_compat.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = [sys.executable, "-c", code, "fetch", "nvrtc", "--cuda", "12", "--wheel", str(crafted)]
    argv += ["--trust-sha256", sha(crafted)]
    env = dict(os.environ, BLACKWELL_COMPAT_CACHE_DIR=str(cache_root))
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("blackwell-compat: fetch: error: writing to ")
    assert "failed: File too large; free some space" in lines[0]
    assert lines[1] == "The cache was not changed."
    assert compilers_listing(cache_root) == []


@pytest.mark.slow
def test_pip_never_runs_a_pip_of_the_working_directory(
    cache_root, only_find_links, ptxas_wheel, tmp_path, monkeypatch
):
    """Before, fetch ran ``python -m pip`` without -I in the caller's working directory, so a
    ``./pip/`` there ran instead of pip.  NVIDIA's pinned wheel on the find-links folder keeps
    this test offline."""
    shutil.copy(ptxas_wheel, only_find_links)
    work = tmp_path / "work"
    (work / "pip").mkdir(parents=True)
    marker = tmp_path / "planted-pip-ran"
    (work / "pip" / "__init__.py").write_text("")
    (work / "pip" / "__main__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise SystemExit(1)\n"
    )
    monkeypatch.chdir(work)
    monkeypatch.setenv("PYTHONPATH", str(work))  # -I ignores it too
    result = fetch("ptxas", cuda_major=12, archs=["sm_121"], timeout=300)
    assert not marker.exists()
    assert result.pinned and "-I -m pip download" in result.origin


def _lie_about_sizes(path: Path, member: str, declared: int) -> None:
    """Rewrite *path* (a zip with stored members) so that *member* declares *declared* bytes
    in its local header and in the central directory."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    # (signature, offset of the name's length, offset of the name, offset of the size)
    for signature, length_at, name_at, size_at in (
        (b"PK\x03\x04", 26, 30, 22),
        (b"PK\x01\x02", 28, 46, 24),
    ):
        start = data.find(signature)
        while start != -1:
            length = int.from_bytes(data[start + length_at : start + length_at + 2], "little")
            if data[start + name_at : start + name_at + length] == name:
                data[start + size_at : start + size_at + 4] = declared.to_bytes(4, "little")
            start = data.find(signature, start + 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case", ["duplicate", "lying-size", "crashing", "wrong-arch"])
def test_what_held_in_a_crafted_wheel_stays_refused(cache_root, tmp_path, case):
    """Held in the red-team round, kept: duplicate names, lying sizes, a library that crashes
    or lacks the arch, all refused with the cache unchanged; and no crafted code ever runs in
    the fetch process itself (only in test processes)."""
    library = "nvidia/cuda_nvrtc/lib/libnvrtc.so.12"
    builtins = "nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.9"
    lib = fake_nvrtc(tmp_path / "b1").read_bytes()
    members = {library: lib, builtins: fake_nvrtc(tmp_path / "b0").read_bytes()}
    expected = "the unpacked NVRTC"
    if case == "duplicate":
        members["nvidia/cu12/lib/libnvrtc.so.12"] = lib
        expected = "has several files for libnvrtc.so.12"
    elif case == "crashing":
        members[library] = fake_nvrtc(tmp_path / "b2", "CTOR_ABORT").read_bytes()
        expected = "killed by signal 6 (SIGABRT)"
    elif case == "wrong-arch":
        members[library] = native_fakes.build(
            "fake_nvrtc.c",
            tmp_path / "b3" / "libnvrtc.so.12",
            "VERSION_MAJOR=12",
            "VERSION_MINOR=9",
            soname="libnvrtc.so.12",
        ).read_bytes()
        expected = "NVRTC 12.9 lacks sm_121"
    path = tmp_path / "w" / "nvidia_cuda_nvrtc_cu12-12.9.86-py3-none-manylinux2010_x86_64.whl"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    if case == "lying-size":
        _lie_about_sizes(path, library, len(lib) // 2)
        expected = "cannot be read"
    with pytest.raises(FetchError, match=re.escape(expected) if case != "lying-size" else expected):
        fetch("nvrtc", cuda_major=12, wheel=path, archs=["sm_121"], trust_sha256=sha(path))
    assert compilers_listing(cache_root) == []
    with open("/proc/self/maps", encoding="utf-8") as handle:
        assert str(cache_root) not in handle.read()  # nothing of it mapped in this process


def test_a_ptxas_the_installed_triton_refuses_is_flagged_as_no_help(cache_root, tmp_path):
    # Issue 22: Triton 3.2 (torch 2.6's) refuses any ptxas newer than 12.6, so a cached 12.9
    # can never serve it; fetch says so instead of implying it helps.  Triton 3.6 takes it.
    from blackwell_compat.versions import installed_version

    tool = Path(make_tool(tmp_path / "tool" / "ptxas", "12.9", rejects=()))
    wheel = make_wheel(
        tmp_path / PTXAS_WHEEL_NAME, {"nvidia/cuda_nvcc/bin/ptxas": tool.read_bytes()}
    )
    result = fetch("ptxas", cuda_major=12, wheel=wheel, archs=["sm_121"], trust_sha256=sha(wheel))
    triton = installed_version("triton") or ""
    assert triton, "every torch session installs torch's triton"
    if triton.startswith("3.2."):
        assert result.unusable is not None
        assert "this triton refuses ptxas 12.9: Triton only support CUDA" in result.unusable
        assert f"WARNING: {result.unusable}" in result.notes
    else:
        assert result.unusable is None, result.unusable
    assert result.as_dict()["unusable"] == result.unusable
