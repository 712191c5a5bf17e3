"""``python -m blackwell_compat fetch``: what it prints, its exit status, and its refusals."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from support.ptxas_tools import PTXAS_WHEEL_NAME, make_tool, make_wheel

from blackwell_compat.cli import main
from blackwell_compat.remedies import pinned


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("BLACKWELL_COMPAT_CACHE_DIR", str(root))
    return root


def capable_wheel(tmp_path):
    tool = make_tool(tmp_path / "tool" / "ptxas", "12.9", rejects=())
    with open(tool, "rb") as handle:
        data = handle.read()
    return make_wheel(tmp_path / PTXAS_WHEEL_NAME, {"nvidia/cuda_nvcc/bin/ptxas": data})


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_prints_what_it_did(cache_root, tmp_path, capsys):
    wheel = capable_wheel(tmp_path)
    trust = ["--trust-sha256", sha(wheel)]  # a stand-in wheel: the user names its sha256
    assert main(["fetch", "ptxas", "--cuda", "12", "--wheel", str(wheel), *trust]) == 0
    out = capsys.readouterr().out
    folder = cache_root / "compilers" / "ptxas" / "12.9.86"
    assert "fetched ptxas 12.9.86 for CUDA 12" in out
    assert "package: nvidia-cuda-nvcc-cu12==12.9.86" in out
    assert f"folder:  {folder}" in out
    assert "files:   bin/ptxas" in out
    assert "sha256:  " in out and f"local wheel {wheel}" in out
    assert "verified: assembled a trivial PTX with --gpu-name=sm_121a" in out
    assert "Nothing was installed into this environment" in out
    assert "trust:   sha256 named by the user (--trust-sha256); not pinned" in out
    assert main(["fetch", "ptxas", "--cuda", "12", "--wheel", str(wheel), *trust]) == 0
    again = capsys.readouterr().out
    assert "already in the cache" in again and "named by the user" in again


def test_fetch_json(cache_root, tmp_path, capsys):
    wheel = capable_wheel(tmp_path)
    argv = ["fetch", "ptxas", "--cuda", "12", "--wheel", str(wheel), "--json"]
    assert main([*argv, "--trust-sha256", sha(wheel)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["files"] == ["bin/ptxas"]
    assert data["pinned"] is False and data["sha256"] == sha(wheel)
    assert data["package"] == "nvidia-cuda-nvcc-cu12" and len(data["sha256"]) == 64


def test_a_failed_fetch_exits_1_and_says_the_cache_is_unchanged(cache_root, tmp_path, capsys):
    junk = tmp_path / PTXAS_WHEEL_NAME
    junk.write_bytes(b"junk")
    argv = ["fetch", "ptxas", "--cuda", "12", "--wheel", str(junk)]
    assert main([*argv, "--trust-sha256", sha(junk)]) == 1
    err = capsys.readouterr().err
    assert "blackwell-compat: fetch: error:" in err and "not a readable wheel" in err
    assert "The cache was not changed." in err
    assert not list((cache_root / "compilers").rglob("manifest.json"))
    assert main(argv) == 1  # without it: not NVIDIA's bytes
    err = capsys.readouterr().err
    pin = [
        w
        for w in pinned.pinned_for("nvidia-cuda-nvcc-cu12", "12.9.86")
        if w.machine == pinned.machine()
    ]
    assert (
        f"got sha256 {sha(junk)}, expected {pin[0].sha256}" in err and "not NVIDIA's wheel" in err
    )


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["fetch"], "the following arguments are required: kind"),
        (["fetch", "nvcc"], "invalid choice: 'nvcc'"),
        (["fetch", "ptxas", "--cuda", "11"], "'11': give 12 or 13"),
    ],
)
def test_bad_arguments_are_usage_errors(argv, expected, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert expected in capsys.readouterr().err


def test_fetch_is_listed_in_the_help():
    done = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "fetch" in done.stdout


def test_json_error_and_a_python_without_pip(cache_root, tmp_path, capsys):
    missing = str(tmp_path / "nopython")
    code = main(["fetch", "ptxas", "--cuda", "12", "--python", missing, "--json"])
    assert code == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["ok"] is False and "cannot run" in data["error"]
    assert str(tmp_path / "nopython") in data["error"]
    assert not list((cache_root / "compilers").rglob("manifest.json"))
