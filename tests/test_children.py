"""blackwell_compat.children: the one child-process runner (time limit, process-group kill,
death with the parent, private working directory, an outcome instead of an exception)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from blackwell_compat import children, config

SHORT = 3.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_an_outcome_says_what_the_child_did() -> None:
    ok = children.run(children.python_argv("-c", "print('hi')"), timeout=60)
    assert ok.ok and ok.returncode == 0 and ok.stdout_text.strip() == "hi"
    assert ok.failure() is None
    failed = children.run(children.python_argv("-c", "raise SystemExit('no luck')"), timeout=60)
    assert failed.failure() == "exited with status 1" and failed.last_line() == "no luck"
    crashed = children.run(children.python_argv("-c", "import os; os.abort()"), timeout=60)
    assert crashed.failure() == "killed by signal 6 (SIGABRT)"
    missing = children.run(["/nonexistent/tool", "--version"], timeout=5)
    assert not missing.started and missing.failure() is not None
    assert missing.failure().startswith("could not be started (/nonexistent/tool: ")


def test_a_hang_is_killed_with_its_whole_group() -> None:
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    started = time.monotonic()
    outcome = children.run(children.python_argv("-c", code), timeout=SHORT)
    assert time.monotonic() - started < 30
    assert outcome.timed_out and outcome.returncode is None
    assert outcome.failure() == f"timed out after {SHORT:g} s (killed; it hung or was too slow)"
    grandchild = int(outcome.stdout_text.split()[0])
    assert _wait_gone(grandchild)


def test_grandchildren_left_behind_go_with_the_child() -> None:
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(p.pid)\n"
    )
    outcome = children.run(children.python_argv("-c", code), timeout=60)
    assert outcome.ok
    assert _wait_gone(int(outcome.stdout_text.split()[0]))


def test_the_working_directory_is_private_fresh_and_removed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = (
        "import os, stat; d = os.getcwd(); print(d); print(oct(stat.S_IMODE(os.stat(d).st_mode)))"
    )
    outcome = children.run(children.python_argv("-c", code), timeout=60)
    folder, mode = outcome.stdout_text.split()
    assert os.path.realpath(folder) != os.path.realpath(tmp_path)
    assert mode == "0o700" and not os.path.exists(folder)
    given = children.run(
        children.python_argv("-c", "import os; print(os.getcwd())"), timeout=60, cwd=str(tmp_path)
    )
    assert os.path.realpath(given.stdout_text.strip()) == os.path.realpath(tmp_path)
    with pytest.raises(ValueError, match="cwd must be an absolute path"):
        children.run(["true"], timeout=5, cwd="relative")


def test_interpreters_are_isolated(tmp_path: Path, monkeypatch) -> None:
    # A `pip/` or `json.py` in the working directory, or PYTHONPATH, never decides what runs.
    (tmp_path / "json.py").write_text("raise SystemExit('planted json imported')\n")
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    outcome = children.run(
        children.python_argv("-c", "import json, sys; print(sys.flags.isolated)"),
        timeout=60,
        env=env,
        cwd=str(tmp_path),
    )
    assert outcome.ok, outcome.failure()
    assert outcome.stdout_text.strip() == "1"


def test_helper_env_drops_what_activates_the_library() -> None:
    base = {config.AUTO: "1", config.EMULATE: "sm_121", "_BLACKWELL_COMPAT_AUDIT": "x", "K": "v"}
    env = children.helper_env(base, drop=("K",), set_={"N": "1"})
    assert env == {"N": "1", config.HELPER_MARK: "1"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_an_exception_while_waiting_kills_the_child() -> None:
    # Ctrl-C (KeyboardInterrupt in the main thread) while a child runs: the child goes too.
    pid_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"bc-children-{os.getpid()}.pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"

    def interrupt() -> None:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    thread = threading.Thread(target=interrupt)
    thread.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            children.run(children.python_argv("-c", code), timeout=120)
    finally:
        thread.join()
    pid = int(pid_file.read_text())
    pid_file.unlink()
    assert _wait_gone(pid)


# -- children die with the program that started them (issue 21) ----------------------------------


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def hanging_nvrtc(tmp_path) -> Path:
    """A site folder whose NVRTC never returns from nvrtcVersion (a broken library)."""
    from support import native_fakes

    _, library = native_fakes.nvrtc_site(tmp_path / "site", "CALL_HANG")
    return library


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_a_test_process_dies_with_the_program_that_started_it(hanging_nvrtc, tmp_path, how):
    """Before: the test process, hanging in the broken library in a session of its own, lived
    on under pid 1 for ever after the program ended, one more at every restart."""
    code = (
        "import sys\n"
        "from blackwell_compat.probing.isolation import run_test_child\n"
        "run_test_child('nvrtc', sys.argv[1], 600)\n"
    )
    program = subprocess.Popen(
        [sys.executable, "-c", code, str(hanging_nvrtc)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    found: list[int] = []
    while time.monotonic() < deadline and not found:
        found = [p for p in _processes_naming(str(hanging_nvrtc)) if p != program.pid]
        time.sleep(0.1)
    assert found, "the test process never started"
    time.sleep(0.5)  # let it reach the library's hanging call
    program.send_signal(getattr(signal, how))
    _, err = program.communicate(timeout=60)
    assert all(_wait_gone(pid) for pid in found), f"left running after {how}: {found}"
    if how == "SIGINT":  # a KeyboardInterrupt in the program: it ends as Python programs do
        assert b"KeyboardInterrupt" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_every_kind_of_child_asks_to_die_with_its_parent(tmp_path) -> None:
    """Tools run through the launcher, the library's Python children begin with the request:
    either way the child's parent-death signal is SIGKILL (field 'PDeathSig' is not in
    /proc/<pid>/status, so the child reports prctl(PR_GET_PDEATHSIG) itself)."""
    ask = (
        "import ctypes, sys\n"
        "v = ctypes.c_int(0)\n"
        "ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0)\n"  # PR_GET_PDEATHSIG
        "print(v.value)\n"
    )
    script = tmp_path / "ask.py"
    script.write_text(ask)
    tool = children.run([sys.executable, "-I", str(script)], timeout=60)  # via the launcher
    guarded = children.run(
        children.python_argv("-c", children.guarded_code(ask)), timeout=60, guarded=True
    )
    assert tool.stdout_text.strip() == guarded.stdout_text.strip() == str(int(signal.SIGKILL))
    bare = children.run(["python3", "-c", "pass"], timeout=60)  # never looked up in PATH
    assert not bare.started and "is no path" in (bare.failure() or "")
