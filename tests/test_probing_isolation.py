"""Native libraries are tried in a child process first (issue 14, points 1-3, 6, Requirement).

The broken libraries are built here with the C compiler from ``tests/support/broken_libs``:
NVRTC/NVML entry points that crash or never return, constructors that abort or exit, an NVML
that lies about its GPUs, and a real NVRTC cut to its first 4096 bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from support import native_fakes

from blackwell_compat.probing import isolation, read_nvml, read_nvrtc
from blackwell_compat.probing.nvml import MAX_GPUS, read_nvml_here

SHORT = 5.0  # seconds a hanging library gets in these tests (a healthy one needs ~0.1 s)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A verdict store of this test only."""
    folder = tmp_path / "verdicts"
    monkeypatch.setenv(isolation.CACHE_DIR_VARIABLE, str(folder))
    return folder


def entries(folder: Path) -> dict[str, dict]:
    data = json.loads((folder / "native-verdicts-v1.json").read_text())
    return data["entries"]


def mapped(path: Path) -> bool:
    with open("/proc/self/maps", encoding="utf-8") as handle:
        return os.path.realpath(path) in handle.read()


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF libraries")


# -- NVRTC --------------------------------------------------------------------------------------


@linux_only
def test_fake_nvrtc_facts_come_from_the_child_then_from_the_store(tmp_path, store, monkeypatch):
    _, library = native_fakes.nvrtc_site(tmp_path / "ok")
    info = read_nvrtc(library)
    assert info.error is None and info.crash is None
    assert info.version == (13, 0)
    assert "sm_120" in info.supported_archs and "sm_121" not in info.supported_archs
    assert not mapped(library)
    monkeypatch.setattr(isolation, "run_test_child", _refuse)
    again = read_nvrtc(library)
    assert (again.version, again.supported_archs) == (info.version, info.supported_archs)


def _refuse(*args, **kwargs):
    raise AssertionError("a test process was started although a verdict was stored")


@linux_only
@pytest.mark.parametrize(
    ("defines", "expected"),
    [
        (("CALL_SEGV",), "killed by signal 11 (SIGSEGV) while calling nvrtcVersion"),
        (("CTOR_ABORT",), "killed by signal 6 (SIGABRT) while loading"),
        (("CTOR_EXIT42",), "exited with status 42 while loading"),
    ],
)
def test_crashing_nvrtc_becomes_a_result_with_its_path(tmp_path, store, defines, expected):
    _, library = native_fakes.nvrtc_site(tmp_path / "bad", *defines)
    info = read_nvrtc(library)
    assert info.version is None and not info.supported_archs
    assert info.crash is not None and expected in info.crash
    assert str(library) in (info.error or "")
    assert "does not load it into this process" in (info.error or "")
    assert not mapped(library)


@pytest.mark.slow
@linux_only
def test_hanging_nvrtc_is_killed_after_the_timeout(tmp_path, store):
    _, library = native_fakes.nvrtc_site(tmp_path / "hang", "CALL_HANG")
    started = time.monotonic()
    info = read_nvrtc(library, timeout=SHORT)
    assert time.monotonic() - started < SHORT + 10
    assert info.crash is not None
    assert f"timed out after {SHORT:g} s" in info.crash
    assert "while calling nvrtcVersion" in info.crash
    assert str(library) in (info.error or "")


@linux_only
def test_truncated_real_nvrtc_is_a_result(tmp_path, store, nvrtc_libraries):
    library = native_fakes.truncated_copy(
        nvrtc_libraries["13.0.88"], tmp_path / "cut" / "libnvrtc.so.13"
    )
    info = read_nvrtc(library)
    assert info.version is None
    assert str(library) in (info.error or "")
    # glibc either refuses the file or dies reading past its end (SIGBUS): both are results.
    assert info.crash is not None or "could not be loaded" in (info.error or "")


@linux_only
def test_stored_verdict_answers_until_the_file_changes(tmp_path, store, monkeypatch):
    _, library = native_fakes.nvrtc_site(tmp_path / "bad", "CALL_SEGV")
    first = read_nvrtc(library)
    assert first.crash
    stored = entries(store)
    (entry,) = [v for k, v in stored.items() if k.startswith("nvrtc|")]
    assert entry["ok"] is False and entry["file"]["size"] == library.stat().st_size

    monkeypatch.setattr(isolation, "run_test_child", _refuse)
    assert read_nvrtc(library).crash == first.crash  # the stored verdict, no child

    monkeypatch.undo()
    monkeypatch.setenv(isolation.CACHE_DIR_VARIABLE, str(store))
    native_fakes.build("fake_nvrtc.c", library)  # the install is repaired: a new file
    repaired = read_nvrtc(library)
    assert repaired.crash is None and repaired.version == (13, 0)


@linux_only
def test_a_rewrite_in_place_that_keeps_size_and_mtime_is_tested_again(tmp_path, store):
    """Issue 21: the verdict was keyed on (path, size, mtime, inode); a library rewritten in
    place with its size and mtime kept was never tested again, and the untested library then
    aborted the program (exit 134).  ctime, which nobody can set back, is in the key now."""
    _, library = native_fakes.nvrtc_site(tmp_path / "lib")
    aborting = native_fakes.build("fake_nvrtc.c", tmp_path / "other" / "lib.so", "CTOR_ABORT")
    good, bad = library.read_bytes(), aborting.read_bytes()
    size = max(len(good), len(bad))
    library.write_bytes(good.ljust(size, b"\0"))  # trailing bytes change nothing in an ELF
    assert read_nvrtc(library).version == (13, 0)  # "passed", stored
    before = library.stat()
    time.sleep(0.05)
    with open(library, "r+b") as handle:  # same inode, same size
        handle.write(bad.ljust(size, b"\0"))
    os.utime(library, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back
    after = library.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    info = read_nvrtc(library)
    assert info.crash is not None and "SIGABRT" in info.crash


@linux_only
def test_retest_ignores_the_stored_verdict(tmp_path, store, monkeypatch):
    _, library = native_fakes.nvrtc_site(tmp_path / "ok")
    read_nvrtc(library)
    calls = []
    real = isolation.run_test_child

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(isolation, "run_test_child", counting)
    read_nvrtc(library)
    assert calls == []
    read_nvrtc(library, retest=True)
    assert len(calls) == 1


def test_unwritable_store_still_answers(tmp_path, monkeypatch, nvrtc_libraries):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store folder should be")
    monkeypatch.setenv(isolation.CACHE_DIR_VARIABLE, str(blocker / "sub"))
    info = read_nvrtc(nvrtc_libraries["12.8.93"])
    assert info.version == (12, 8) and info.error is None


# -- NVML ---------------------------------------------------------------------------------------


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize(
    ("defines", "expected"),
    [
        (("CALL_SEGV",), "killed by signal 11 (SIGSEGV) while calling nvmlInit_v2"),
        (("CALL_HANG",), f"timed out after {SHORT:g} s"),
    ],
)
def test_crashing_or_hanging_nvml_is_a_result(tmp_path, store, defines, expected):
    folder = native_fakes.nvml_folder(tmp_path / "nvml", *defines)
    library = folder / "libnvidia-ml.so.1"
    driver, gpus = read_nvml(library, timeout=SHORT)
    assert gpus == ()
    assert driver.available is False
    assert driver.crash is not None and expected in driver.crash
    assert str(library) in (driver.error or "")
    assert not mapped(library)


@linux_only
def test_nvml_listing_four_billion_gpus_is_bounded_and_reported(tmp_path, store):
    folder = native_fakes.nvml_folder(tmp_path / "nvml", "GPU_COUNT=4294967295u")
    started = time.monotonic()
    driver, gpus = read_nvml(folder / "libnvidia-ml.so.1", timeout=30)
    assert time.monotonic() - started < 30
    assert len(gpus) == MAX_GPUS
    assert any("4294967295" in note for note in driver.notes)


@linux_only
@pytest.mark.parametrize(("major", "minor"), [(12, 10), (-1, -1), (2, 0), (25, 0)])
def test_nonsense_compute_capability_skips_the_gpu_and_says_so(tmp_path, store, major, minor):
    folder = native_fakes.nvml_folder(tmp_path / "nvml", f"CC_MAJOR={major}", f"CC_MINOR={minor}")
    driver, gpus = read_nvml(folder / "libnvidia-ml.so.1")
    assert gpus == ()
    assert any(f"compute capability {major}.{minor}" in note for note in driver.notes)


@linux_only
def test_nvml_that_survived_is_read_here_from_the_tested_file(tmp_path, store, monkeypatch):
    folder = native_fakes.nvml_folder(tmp_path / "nvml")
    library = folder / "libnvidia-ml.so.1"
    driver, gpus = read_nvml(library)  # cold: facts from the child
    assert not mapped(library)
    assert [g.arch for g in gpus] == ["sm_121"] and driver.driver_version == "999.99"
    monkeypatch.setattr(isolation, "run_test_child", _refuse)
    warm_driver, warm_gpus = read_nvml(library)  # warm: the verdict lets it load here
    assert warm_gpus == gpus
    assert warm_driver.library == os.path.realpath(library)


@linux_only
def test_direct_read_bounds_the_count_too(tmp_path):
    folder = native_fakes.nvml_folder(tmp_path / "nvml", "GPU_COUNT=4294967295u")
    driver, gpus = read_nvml_here(folder / "libnvidia-ml.so.1")
    assert len(gpus) == MAX_GPUS
    assert driver.available


# -- the whole probe, in a fresh interpreter ------------------------------------------------------

PROBE = """
import json, time
started = time.perf_counter()
import blackwell_compat as bc
p = bc.probe()
print(json.dumps({"seconds": time.perf_counter() - started, "reasons": list(p.reasons),
                  "failures": list(p.native_failures), "nvrtc": p.nvrtc.as_dict(),
                  "driver": p.driver.as_dict(), "gpus": [g.arch for g in p.gpus]}))
"""


def broken_env(tmp_path: Path, store: Path, *, nvml: tuple[str, ...], nvrtc: tuple[str, ...]):
    folder = native_fakes.nvml_folder(tmp_path / "nvml", *nvml)
    site, library = native_fakes.nvrtc_site(tmp_path / "site", *nvrtc)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLACKWELL_COMPAT_", "_BLACK"))}
    env.update(
        LD_LIBRARY_PATH=str(folder),
        PYTHONPATH=str(site),
        BLACKWELL_COMPAT_CACHE_DIR=str(store),
        BLACKWELL_COMPAT_PROBE_TIMEOUT=str(SHORT),
    )
    return env, folder / "libnvidia-ml.so.1", library


def run(code: str, env: dict[str, str], cwd: Path, *args: str, timeout: float = 120):
    argv = [sys.executable, *(["-c", code] if code else []), *args]
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize(
    ("nvml", "nvrtc", "nvml_what", "nvrtc_what"),
    [
        (("CALL_SEGV",), ("CALL_HANG",), "signal 11", "timed out"),
        (("CALL_HANG",), ("CALL_SEGV",), "timed out", "signal 11"),
        ((), ("CTOR_ABORT",), None, "signal 6"),
    ],
)
def test_probe_survives_broken_libraries_and_names_them(
    tmp_path, store, nvml, nvrtc, nvml_what, nvrtc_what
):
    env, nvml_lib, nvrtc_lib = broken_env(tmp_path, store, nvml=nvml, nvrtc=nvrtc)
    done = run(PROBE, env, tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert nvrtc_what in found["nvrtc"]["crash"] and str(nvrtc_lib) in found["nvrtc"]["error"]
    if nvml_what is None:
        assert found["driver"]["crash"] is None and found["gpus"] == ["sm_121"]
    else:
        assert nvml_what in found["driver"]["crash"]
        assert os.path.realpath(nvml_lib) in found["driver"]["error"]
    assert any(str(nvrtc_lib) in line for line in found["failures"])


@linux_only
def test_probe_never_raises_on_nonsense_capability(tmp_path, store):
    env, _, _ = broken_env(tmp_path, store, nvml=("CC_MAJOR=12", "CC_MINOR=10"), nvrtc=())
    done = run(PROBE, env, tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["gpus"] == []
    assert "compute capability 12.10" in found["reasons"][0]


# The activation runs at the first `import torch`, or at the first use of the API.  A program
# that imports torch with a broken NVRTC in torch's own folder would have torch load it (its
# preload): those cases use the API, the NVML ones a real `import torch`.
IMPORTS_TORCH = "import torch\nprint('program ran')"
USES_THE_API = "import blackwell_compat as bc\nbc.status()\nprint('program ran')"


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize(
    ("nvml", "nvrtc", "what", "program"),
    [
        (("CALL_SEGV",), (), "signal 11", IMPORTS_TORCH),
        (("CALL_HANG",), (), "timed out", IMPORTS_TORCH),
        ((), ("CALL_SEGV",), "signal 11", USES_THE_API),
        ((), ("CALL_HANG",), "timed out", USES_THE_API),
        ((), ("CTOR_EXIT42",), "exited with status 42", USES_THE_API),
    ],
)
def test_auto_start_up_runs_the_program_and_warns_once(tmp_path, store, nvml, nvrtc, what, program):
    env, _, _ = broken_env(tmp_path, store, nvml=nvml, nvrtc=nvrtc)
    env["BLACKWELL_COMPAT_AUTO"] = "1"
    cold = run(program, env, tmp_path)
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout.strip() == "program ran"
    assert what in cold.stderr and "not loaded into this program" in cold.stderr
    stored = entries(store)
    warm = run(program, env, tmp_path)  # the stored verdict: no second test, no second wait
    assert warm.returncode == 0 and warm.stdout.strip() == "program ran"
    assert what in warm.stderr
    assert entries(store) == stored  # a second test process would have written its own verdict


@pytest.mark.slow
@linux_only
def test_list_survives_broken_libraries(tmp_path, store):
    env, nvml_lib, _ = broken_env(tmp_path, store, nvml=("CALL_SEGV",), nvrtc=("CALL_HANG",))
    done = run("", env, tmp_path, "-m", "blackwell_compat", "list", "--json")
    assert done.returncode == 0, done.stderr
    whys = " ".join(row["why"] for row in json.loads(done.stdout)["patches"])
    assert os.path.realpath(nvml_lib) in whys and "signal 11" in whys


@pytest.mark.slow
@linux_only
def test_doctor_survives_broken_libraries_and_reports_them(tmp_path, store):
    env, nvml_lib, nvrtc_lib = broken_env(
        tmp_path, store, nvml=("CALL_HANG",), nvrtc=("CALL_SEGV",)
    )
    done = run("", env, tmp_path, "-m", "blackwell_compat", "doctor", "--json", "--timeout", "5")
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    text = json.dumps(report)
    assert os.path.realpath(nvml_lib) in text and "timed out after 5 s" in text
    assert str(nvrtc_lib) in text and "signal 11" in text


def test_cache_dir_follows_the_variables(tmp_path):
    assert isolation.cache_dir({isolation.CACHE_DIR_VARIABLE: str(tmp_path)}) == tmp_path
    if sys.platform != "win32":
        xdg = isolation.cache_dir({"XDG_CACHE_HOME": str(tmp_path)})
        assert xdg == tmp_path / "blackwell-compat"
        relative = isolation.cache_dir({"XDG_CACHE_HOME": "relative/dir"})
        assert relative == Path.home() / ".cache" / "blackwell-compat"


def test_timeout_variable_is_checked():
    assert isolation.default_timeout({}) == isolation.DEFAULT_TIMEOUT
    assert isolation.default_timeout({isolation.TIMEOUT_VARIABLE: "2.5"}) == 2.5
    for bad in ("soon", "-1", "0", "nan"):
        assert isolation.default_timeout({isolation.TIMEOUT_VARIABLE: bad}) == 20.0


@linux_only
def test_emulation_never_loads_an_nvrtc_that_failed_its_test(tmp_path, store):
    # emulation compiles with the probed NVRTC to reproduce the real error message; a library
    # whose constructor aborts must not be loaded for that either.
    env, _, _ = broken_env(tmp_path, store, nvml=(), nvrtc=("CTOR_ABORT",))
    code = "from blackwell_compat import emulation; print(emulation.real_nvrtc_log('sm_121'))"
    done = run(code, env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"


@linux_only
@pytest.mark.parametrize("executable", ["/bin/false", "/nonexistent/python"])
def test_a_test_process_that_never_reached_the_library_stores_nothing(
    tmp_path, store, monkeypatch, executable
):
    # An embedding interpreter whose sys.executable is not Python says nothing about the
    # library: no verdict is stored (the next process tries again) and nothing is loaded here.
    _, library = native_fakes.nvrtc_site(tmp_path / "ok")
    folder = native_fakes.nvml_folder(tmp_path / "nvml")
    monkeypatch.setattr(sys, "executable", executable)
    info = read_nvrtc(library)
    driver, gpus = read_nvml(folder / "libnvidia-ml.so.1")
    monkeypatch.undo()
    assert info.error is not None and info.error.startswith("not read:")
    assert info.crash is None and info.version is None
    assert driver.available is False and gpus == () and driver.crash is None
    assert "does not load an untested library" in (driver.error or "")
    assert not (store / "native-verdicts-v1.json").exists()
    assert not mapped(library) and not mapped(folder / "libnvidia-ml.so.1")


@linux_only
def test_a_store_others_can_write_to_is_ignored(tmp_path, monkeypatch):
    # A verdict store in a folder another user could write is no evidence: someone could mark
    # a crashing library as tested.  The library is tested again; nothing is written there.
    _, library = native_fakes.nvrtc_site(tmp_path / "bad", "CALL_SEGV")
    folder = tmp_path / "shared"
    folder.mkdir()
    key = f"nvrtc|{os.path.abspath(library)}"
    forged = {
        "version": 1,
        "entries": {
            key: {
                "ok": True,
                "file": isolation._file_id(str(library)),
                "result": {"version": "13.0", "supported_archs": ["sm_121"], "error": None},
            }
        },
    }
    store_file = folder / "native-verdicts-v1.json"
    store_file.write_text(json.dumps(forged))
    folder.chmod(0o777)
    monkeypatch.setenv(isolation.CACHE_DIR_VARIABLE, str(folder))
    info = read_nvrtc(library)
    assert info.crash is not None and "SIGSEGV" in info.crash
    assert json.loads(store_file.read_text()) == forged
    folder.chmod(0o700)


@linux_only
def test_read_only_cache_folder_falls_back_to_a_private_temporary_store(tmp_path, monkeypatch):
    _, library = native_fakes.nvrtc_site(tmp_path / "ok")
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    monkeypatch.delenv(isolation.CACHE_DIR_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(isolation.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert read_nvrtc(library).version == (13, 0)
    fallback = tmp_path / "tmp" / f"blackwell-compat-{os.getuid()}" / "native-verdicts-v1.json"
    assert fallback.is_file()
    assert (fallback.parent.stat().st_mode & 0o777) == 0o700
    monkeypatch.setattr(isolation, "run_test_child", _refuse)
    assert read_nvrtc(library).version == (13, 0)


# -- an unusual process environment ---------------------------------------------------------------


@linux_only
def test_no_home_folder_falls_back_to_a_private_temporary_folder(tmp_path, monkeypatch):
    """A container run with an arbitrary uid has no HOME and no passwd entry.  Before issue 14
    the whole probe failed there; before issue 21 the store went to ``<tmp>/.cache/
    blackwell-compat``, one folder every user shares.  Now: ``<tmp>/blackwell-compat-<uid>``,
    mode 0700, this uid's."""
    import pwd

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv(isolation.CACHE_DIR_VARIABLE, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    private = tmp_path / f"blackwell-compat-{os.getuid()}"
    assert isolation.cache_dir() == private
    _, library = native_fakes.nvrtc_site(tmp_path / "ok")
    info = read_nvrtc(library, retest=True)
    assert info.error is None and info.version == (13, 0)
    assert (private / "native-verdicts-v1.json").is_file()
    st = private.stat()
    assert st.st_uid == os.getuid() and (st.st_mode & 0o777) == 0o700
    assert not (tmp_path / ".cache").exists()


@linux_only
def test_no_writable_temporary_folder_is_no_exception(tmp_path, store, monkeypatch):
    """Test processes start in the file-system root when no temporary folder can be made;
    before, run_test_child and the doctor's run_child raised FileNotFoundError."""
    from blackwell_compat.doctor import process

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    _, library = native_fakes.nvrtc_site(tmp_path / "ok")
    outcome = isolation.run_test_child("nvrtc", str(library), SHORT)
    assert outcome.failure is None, outcome
    result = process.run_child(["-c", "import os; print(os.getcwd())"], timeout=SHORT)
    assert result.error is None and result.stdout_tail.strip() == os.path.abspath(os.sep)


@pytest.mark.slow
@linux_only
def test_eight_simultaneous_cold_starts_all_run_and_leave_one_good_store(tmp_path):
    """Held in the red-team round, kept: eight AUTO=1 programs started at once on an empty
    cache each test the libraries when they import torch (the hook only arms itself before
    that), run, and the store they share stays readable."""
    _, library = native_fakes.nvrtc_site(tmp_path / "site")
    store_folder = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLACKWELL_COMPAT_", "_BLACK"))}
    env.update(
        BLACKWELL_COMPAT_AUTO="1",
        BLACKWELL_COMPAT_CACHE_DIR=str(store_folder),
        PYTHONPATH=str(tmp_path / "site"),
    )
    programs = [
        subprocess.Popen(
            [sys.executable, "-c", "import torch\nprint('ran')"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = [p.communicate(timeout=300) for p in programs]
    assert [p.returncode for p in programs] == [0] * 8, results
    assert all(out.strip() == "ran" for out, _ in results)
    stored = entries(store_folder)
    assert f"nvrtc|{os.path.abspath(library)}" in stored
    assert list(store_folder.glob(".verdicts-*")) == []  # no temporary file left behind
