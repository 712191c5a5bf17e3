"""Child processes of the doctor: records, crashes, timeouts; the torch/torchaudio probe."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import time

import pytest

from blackwell_compat.doctor.facts import probe_stack, stack_facts_from
from blackwell_compat.doctor.process import (
    MARKER,
    ChildResult,
    describe_exit,
    module_argv,
    run_child,
)


def test_records_are_read_and_other_output_kept_as_tail():
    code = (
        "import json, sys\n"
        "print('chatter')\n"
        f"print({MARKER!r} + json.dumps({{'section': 'a', 'x': 1}}))\n"
        f"print({MARKER!r} + 'not json')\n"
        f"print({MARKER!r} + json.dumps({{'section': 'a', 'x': 2}}))\n"
        "print('more', file=sys.stderr)\n"
    )
    result = run_child(["-c", code], timeout=60)
    assert result.ok and result.returncode == 0
    assert result.record("a") == {"section": "a", "x": 2}
    assert result.record("b") is None
    assert "chatter" in result.stdout_tail and "not json" in result.stdout_tail
    assert "more" in result.stderr_tail


def test_a_hang_is_killed_with_its_grandchildren():
    # The grandchild inherits the pipes; without killing the process group the doctor would
    # wait for it.
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    result = run_child(["-c", code], timeout=3)
    assert time.monotonic() - started < 20
    assert result.timed_out and not result.ok
    assert result.error == "timed out after 3 s (killed; it hung or was too slow)"
    assert "started" in result.stdout_tail


def test_a_crash_is_described_with_the_signal():
    result = run_child(["-c", "import os; os.abort()"], timeout=60)
    assert not result.ok
    assert result.error is not None and result.error.startswith("killed by signal 6 (SIGABRT)")


def test_a_failing_child_reports_its_last_error_line():
    result = run_child(["-c", "raise SystemExit('no luck here')"], timeout=60)
    assert result.error == "exited with status 1: no luck here"


def test_a_child_that_cannot_start():
    result = run_child(["-c", "pass"], timeout=5, python="/nonexistent/python3")
    assert result.error is not None
    assert result.error.startswith("could not be started (/nonexistent/python3: ")


def test_describe_exit():
    assert describe_exit(-11) == "killed by signal 11 (SIGSEGV)"
    assert describe_exit(3) == "exited with status 3"


def test_module_argv_runs_a_module_of_this_package():
    code_args = module_argv("blackwell_compat.doctor.stack_child", "--no-cuda", "--no-torchaudio")
    result = run_child(code_args, timeout=300)
    assert result.ok, result
    record = result.record("torch")
    assert record is not None and "installed" in record


def test_stack_probe_reads_the_real_torch_and_torchaudio():
    torch_facts, audio_facts, child = probe_stack(timeout=300)
    assert child.ok, child
    try:
        installed = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    assert torch_facts.installed == (installed is not None)
    if installed is not None:
        assert torch_facts.error is None
        assert torch_facts.version is not None
        assert torch_facts.version.split("+")[0] == installed.split("+")[0]
        if torch_facts.cuda:
            assert torch_facts.arch_list, "a CUDA build lists its compiled archs without a GPU"
            assert all(a.startswith(("sm_", "compute_")) for a in torch_facts.arch_list)
        if sys.platform.startswith("linux") and torch_facts.cuda:
            assert any("libnvrtc" in p for p in torch_facts.loaded_nvrtc)
    try:
        audio_installed = importlib.metadata.version("torchaudio")
    except importlib.metadata.PackageNotFoundError:
        audio_installed = None
    assert audio_facts.installed == (audio_installed is not None)


def test_child_crash_while_loading_torchaudio_keeps_the_torch_facts():
    child = ChildResult(
        argv=("python",),
        returncode=-11,
        timed_out=False,
        seconds=1.0,
        records=({"section": "torch", "installed": True, "version": "2.8.0", "cuda": "12.8"},),
        error="killed by signal 11 (SIGSEGV)",
    )
    torch_facts, audio_facts = stack_facts_from(child)
    assert torch_facts.version == "2.8.0" and torch_facts.error is None
    if audio_facts.installed:
        assert audio_facts.native_loaded is False
        assert audio_facts.error == "loading torchaudio failed: killed by signal 11 (SIGSEGV)"


def test_child_timeout_before_any_record_is_a_torch_error():
    child = ChildResult(
        argv=("python",), returncode=None, timed_out=True, seconds=5.0, error="timed out after 5 s"
    )
    torch_facts, _ = stack_facts_from(child)
    assert torch_facts.error == "the torch probe failed: timed out after 5 s"


def test_crashed_torch_child_leaves_torchaudio_not_checked():
    # Issue 14, point 16: a child that died in torch says nothing about torchaudio.
    child = ChildResult(
        argv=("python",),
        returncode=-11,
        timed_out=False,
        seconds=1.0,
        error="killed by signal 11 (SIGSEGV)",
    )
    torch_facts, audio_facts = stack_facts_from(child)
    assert torch_facts.error == "the torch probe failed: killed by signal 11 (SIGSEGV)"
    assert audio_facts.tried is False
    assert audio_facts.native_loaded is None
    if audio_facts.installed:
        assert audio_facts.error is not None
        assert audio_facts.error.startswith("not checked: torchaudio is loaded after torch")
        assert "killed by signal 11 (SIGSEGV)" in audio_facts.error


def test_torch_import_error_leaves_torchaudio_not_checked():
    child = ChildResult(
        argv=("python",),
        returncode=0,
        timed_out=False,
        seconds=1.0,
        records=(
            {"section": "torch", "installed": True, "error": "import torch failed: OSError: x"},
        ),
    )
    _, audio_facts = stack_facts_from(child)
    assert audio_facts.tried is False and audio_facts.native_loaded is None


def test_children_never_have_the_working_directory_on_sys_path(tmp_path, monkeypatch):
    # Issue 14, point 10: `python -c` would put '' (the cwd) first on sys.path.
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "bc_show_path.py").write_text(
        "import json, os, sys\n"
        f"print({MARKER!r} + json.dumps({{'section': 'p', 'path': sys.path, "
        "'cwd': os.getcwd()}))\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = module_argv("bc_show_path")
    assert argv[0] == "-I"  # isolated: no working directory, no PYTHON* variables of its own
    env = dict(os.environ, PYTHONPATH=str(mods))
    result = run_child(argv, timeout=60, env=env)
    record = result.record("p")
    assert record is not None, result.error
    assert "" not in record["path"] and "." not in record["path"]
    assert str(work) not in record["path"]
    assert str(mods) in record["path"]  # PYTHONPATH still counts, as in the user's programs
    assert os.path.realpath(record["cwd"]) != os.path.realpath(work)
    assert not os.path.exists(record["cwd"])  # an empty scratch folder, removed afterwards


def test_doctor_tests_native_libraries_afresh_with_its_timeout(monkeypatch):
    # The doctor ignores stored verdicts (a library may have been repaired, or a slow first
    # start mistaken for a hang) and bounds each test process by its own tool timeout.
    import blackwell_compat.probing as probing
    from blackwell_compat.doctor import facts

    seen: list[float | None] = []

    def retest(timeout=None):
        seen.append(timeout)
        return probing.build_platform()

    monkeypatch.setattr(facts, "retest", retest)
    platform, error = facts._probe_platform(7.0)
    assert seen == [7.0] and error is None
    assert platform.affected is False


@pytest.mark.targets
@pytest.mark.torchaudio
def test_the_installed_torchaudio_loads_and_names_its_cuda_build():
    # Issue 22: torchaudio 2.6 has no torch.ops._torchaudio.cuda_version; the doctor read it
    # there, reported "does not load" for a healthy install and advised reinstalling it.  It
    # runs where each torchaudio is installed: 2.6 (tests-oldest-torch) and 2.11 (tests-full).
    torch_facts, audio, child = probe_stack(timeout=300)
    assert child.ok, child
    installed = importlib.metadata.version("torchaudio")
    assert audio.installed and audio.tried
    assert (audio.version or "").split("+")[0] == installed.split("+")[0]
    assert audio.error is None and audio.cuda_version_error is None, audio
    assert audio.native_loaded is True
    # The pinned torchaudio is the CUDA build made for the pinned torch (cu124 / cu130).
    assert torch_facts.cuda is not None
    assert audio.cuda_version == torch_facts.cuda
    assert audio.cpu_only is False
