"""The NVRTC remedy with real libraries, each path in a child process.

The test process never loads NVRTC: every child starts clean, takes one loading path (start-up
hook, ``run``, ``apply()`` before or after ``import torch``), then does what torch's LazyNVRTC
does, ``dlopen("libnvrtc.so.<N>")``, and compiles a tiny kernel for sm_121, sm_120 and sm_103
through that handle.  Where the installed torch is a CUDA 12 build (the oldest-torch session:
torch 2.6.0+cu124, NVRTC 12.4) the capable library is the real 12.9.86 wheel, and torch's own
NVRTC really fails; with a CUDA 13 build (NVRTC 13.0, which lists sm_121) the remedy is shown
under emulation with a second copy of the 13.0.88 wheel, torch's own copy being excluded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.environ import clean_env

from blackwell_compat import config, loader
from blackwell_compat.errors import ConfigError
from blackwell_compat.probing.locate import TorchBuild, find_nvrtc, locate_torch
from blackwell_compat.remedies import nvrtc as remedy

MARK = "@@remedy-test@@ "
ARCHS = ("sm_121", "sm_120", "sm_103")
TORCH = locate_torch()
MAJOR = TORCH.cuda_major
CAPABLE = {12: "12.9.86", 13: "13.0.88"}
# 12.8.93 lists sm_120 but not sm_121; for a CUDA 13 torch, 12.9.86 has the wrong soname.
LACKING = {12: ("12.8.93", "lacks sm_121"), 13: ("12.9.86", "torch opens 'libnvrtc.so.13'")}

needs_cuda_torch = pytest.mark.skipif(
    MAJOR not in CAPABLE, reason=f"needs a CUDA 12 or 13 build of torch ({TORCH.describe()})"
)

# What torch's LazyNVRTC does, then a compile per arch through that very handle.
TAIL = textwrap.dedent(
    f"""
    import ctypes, json, os
    from blackwell_compat.probing.nvrtc import compile_here
    from blackwell_compat.remedies import nvrtc as _remedy
    _soname = _remedy.soname_for({MAJOR!r})
    _lib = ctypes.CDLL(_soname, mode=os.RTLD_LOCAL | os.RTLD_NOW)
    _a, _b = ctypes.c_int(), ctypes.c_int()
    _lib.nvrtcVersion(ctypes.byref(_a), ctypes.byref(_b))
    _maps = sorted({{l.split()[-1] for l in open("/proc/self/maps") if "libnvrtc" in l}})
    _out = {{
        "version": f"{{_a.value}}.{{_b.value}}",
        "compiles": {{arch: compile_here(_soname, arch) for arch in {ARCHS!r}}},
        "maps": _maps,
        "state": _remedy.state().as_dict(),
        "extra": globals().get("extra", {{}}),
    }}
    print({MARK!r} + json.dumps(_out, default=str))
    """
)

KERNELS = textwrap.dedent(
    """
    import torch
    from blackwell_compat.ops import dispatcher as dispatch
    def python_kernels():
        found = {}
        for op in ("aten::abs.out", "aten::lgamma"):
            lines = torch._C._dispatch_dump(op).splitlines()
            # A boxed Python kernel has no schema ("(none)"); the native ones show theirs.
            found[op] = [
                line for line in lines
                if line.startswith(("CPU:", "CUDA:", "BackendSelect:")) and ":: (none) [" in line
            ]
        return {"keys": dispatch.installed_keys(), "python": found}
    """
)


def _library(nvrtc_libraries: dict[str, str], version: str) -> str:
    return nvrtc_libraries[version]


def _run(code: str, *, nvrtc: str | None, argv: list[str] | None = None, **env: str) -> Any:
    extra = {
        "BLACKWELL_COMPAT_CACHE_DIR": os.environ["BLACKWELL_COMPAT_CACHE_DIR"],
        "PYTHONFAULTHANDLER": "1",
        config.NVRTC: nvrtc if nvrtc is not None else "off",
        **env,
    }
    command = argv or [sys.executable, "-c", code]
    result = subprocess.run(
        command,
        env=clean_env(**extra),
        cwd=str(Path(__file__).resolve().parent.parent),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = [x for x in result.stdout.splitlines() if x.startswith(MARK)]
    assert result.returncode == 0 and lines, (
        f"child failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return json.loads(lines[-1][len(MARK) :])


def _assert_served(out: dict[str, Any], library: str, version: str) -> None:
    """dlopen(soname) returns the capable library, and it compiles for every arch."""
    assert out["version"] == version[: version.rindex(".")], out
    assert out["state"]["status"] == remedy.SERVED, out["state"]
    assert os.path.samefile(out["state"]["library"], library)
    for arch in ARCHS:
        assert out["compiles"][arch] == {"result": 0, "log": out["compiles"][arch]["log"]}, (
            arch,
            out["compiles"][arch],
        )


# -- the loading paths -----------------------------------------------------------------------


@needs_cuda_torch
@pytest.mark.slow
def test_without_the_remedy_torch_keeps_its_own(nvrtc_libraries: dict[str, str]) -> None:
    out = _run("import torch\n" + TAIL, nvrtc=None)
    assert out["state"]["status"] == remedy.INACTIVE
    # What each torch's own NVRTC compiles (measured, docs/concepts.md): the remedy's reason.
    known = {"12.4": set(), "12.6": set(), "12.8": {"sm_120"}, "12.9": set(ARCHS)}
    known["13.0"] = set(ARCHS)
    for arch in ARCHS:
        result = out["compiles"][arch]
        expected = arch in known[out["version"]] if out["version"] in known else None
        if result["result"] != 0:
            assert result["result"] == 5, result  # NVRTC_ERROR_INVALID_OPTION
            assert "invalid value for --gpu-architecture" in result["log"], result
        if expected is not None:
            assert (result["result"] == 0) == expected, (out["version"], arch, result)
    if TORCH.version == "2.6.0+cu124":  # the oldest-torch session: the real affected stack
        assert out["version"] == "12.4"
        assert all(out["compiles"][arch]["result"] == 5 for arch in ARCHS)


@needs_cuda_torch
@pytest.mark.slow
def test_start_up_hook_loads_it_before_torch(nvrtc_libraries: dict[str, str]) -> None:
    version = CAPABLE[MAJOR]  # type: ignore[index]
    library = _library(nvrtc_libraries, version)
    code = "import torch\n" + TAIL
    out = _run(
        code,
        nvrtc=os.path.dirname(library),
        BLACKWELL_COMPAT_AUTO="1",
        BLACKWELL_COMPAT_EMULATE="sm_121",
    )
    _assert_served(out, library, version)
    assert out["state"]["how"] == "loaded before torch was imported"
    assert out["state"]["origin"] == config.NVRTC


@needs_cuda_torch
@pytest.mark.slow
def test_run_command_loads_it_in_the_program(nvrtc_libraries: dict[str, str]) -> None:
    version = CAPABLE[MAJOR]  # type: ignore[index]
    library = _library(nvrtc_libraries, version)
    code = "import torch\n" + TAIL
    argv = [
        sys.executable,
        "-m",
        "blackwell_compat",
        "run",
        "--emulate",
        "sm_121",
        "--",
        sys.executable,
        "-c",
        code,
    ]
    out = _run(code, nvrtc=library, argv=argv)
    _assert_served(out, library, version)
    assert out["state"]["how"] == "loaded before torch was imported"


@needs_cuda_torch
@pytest.mark.slow
def test_apply_before_torch(nvrtc_libraries: dict[str, str]) -> None:
    version = CAPABLE[MAJOR]  # type: ignore[index]
    library = _library(nvrtc_libraries, version)
    code = (
        "import blackwell_compat as bc\n"
        "with bc.emulate('sm_121'):\n"
        "    report = bc.apply()\n" + KERNELS + "with bc.emulate('sm_121'):\n"
        "    extra = python_kernels()\n"
        "    extra['torch'] = [e.as_dict() for e in report.entries if e.name == 'torch']\n"
        "    extra['probe'] = bc.probe().as_dict()\n"
        "    extra['abs'] = torch.tensor([3 + 4j]).abs().tolist()\n"
        "from blackwell_compat.remedies import nvrtc\n"
        "extra['serves'] = [nvrtc.serves(a) for a in ('sm_121', '12.1', 'sm_37')]\n"
        "extra['active'] = nvrtc.active() is nvrtc.state()\n"
        "import logging\n"
        "said = []\n"
        "class Keep(logging.Handler):\n"
        "    def emit(self, record): said.append(record.getMessage())\n"
        "logging.getLogger('blackwell_compat').addHandler(Keep())\n"
        "bc.revert()\n"
        "extra['revert_said'] = said\n" + TAIL
    )
    out = _run(code, nvrtc=library)
    _assert_served(out, library, version)  # revert() cannot unload it: still what torch gets
    extra = out["extra"]
    assert extra["serves"] == [True, True, False] and extra["active"] is True
    # revert() says what it could not undo.
    assert any("stays loaded" in line and library in line for line in extra["revert_said"])
    # The ladder: no op-guard kernel, no emulation kernel; the status says which rung serves.
    assert extra["keys"] == [] and extra["python"] == {"aten::abs.out": [], "aten::lgamma": []}
    (guard,) = extra["torch"]
    assert guard["state"] == "skipped"
    assert f"served by the NVRTC remedy ({library}, NVRTC {version[:4]})" in guard["reason"]
    probe = extra["probe"]
    assert probe["affected"] is False
    assert os.path.samefile(probe["nvrtc"]["path"], library)
    assert probe["nvrtc"]["replaces"] is not None
    assert extra["abs"] == [5.0]  # emulation does not fail: the served arch compiles


@needs_cuda_torch
@pytest.mark.slow
def test_apply_after_import_torch_releases_torchs_copy(nvrtc_libraries: dict[str, str]) -> None:
    version = CAPABLE[MAJOR]  # type: ignore[index]
    library = _library(nvrtc_libraries, version)
    code = (
        "import torch\n"
        "import blackwell_compat as bc\n"
        "from blackwell_compat.probing.locate import find_nvrtc\n"
        "own = find_nvrtc(in_process=False, read=False).path\n"
        "with bc.emulate('sm_121'):\n"
        "    bc.apply()\n"
        "extra = {'own': own, 'initialised': torch.cuda.is_initialized()}\n" + TAIL
    )
    out = _run(code, nvrtc=library)
    own = out["extra"]["own"]
    assert out["extra"]["initialised"] is False
    if _torch_links_nvrtc():
        # torch >= 2.15: libtorch_cuda.so links libnvrtc.so.<N> itself, so after `import
        # torch` its NVRTC can never be released; the remedy says why and changes nothing.
        state = out["state"]
        assert state["status"] == remedy.FAILED, state
        assert "libtorch_cuda.so links libnvrtc.so" in state["reason"]
        assert "before `import torch`" in state["reason"]
        assert state["released"] == [] and own in out["maps"]
        assert not any(os.path.samefile(p, library) for p in out["maps"])
        return
    _assert_served(out, library, version)
    assert out["state"]["released"] and os.path.samefile(out["state"]["released"][-1], own)
    assert own not in out["maps"]  # torch's copy is gone, not merely shadowed
    assert "torch's preloaded copy released" in out["state"]["how"]


def _torch_links_nvrtc() -> bool:
    """Whether the installed torch's libtorch_cuda.so links NVRTC itself (torch >= 2.15)."""
    lib = os.path.join(TORCH.location or "", "lib", "libtorch_cuda.so")
    return remedy.soname_for(MAJOR) in loader.read_needed(lib)  # type: ignore[arg-type]


@needs_cuda_torch
@pytest.mark.slow
def test_too_late_once_cuda_is_initialised(nvrtc_libraries: dict[str, str]) -> None:
    """CUDA initialisation is simulated by making the remedy's condition function answer True
    (no GPU here); the libraries themselves are real and nothing is mocked about loading."""
    library = _library(nvrtc_libraries, CAPABLE[MAJOR])  # type: ignore[index]
    code = (
        "import torch\n"
        "import blackwell_compat as bc\n"
        "from blackwell_compat.remedies import nvrtc as r\n"
        "r._cuda_initialised = lambda: True\n"
        "before = sorted({l.split()[-1] for l in open('/proc/self/maps') if 'libnvrtc' in l})\n"
        + KERNELS
        + "with bc.emulate('sm_121'):\n"
        "    report = bc.apply()\n"
        "    extra = python_kernels()\n"
        "    extra['guard'] = [e.state for e in report.entries if e.name == 'torch']\n"
        "extra['before'] = before\n" + TAIL
    )
    out = _run(code, nvrtc=library)
    state = out["state"]
    assert state["status"] == remedy.TOO_LATE
    assert "CUDA is already initialised" in state["reason"]
    assert "python -m blackwell_compat run" in state["reason"] and "apply()" in state["reason"]
    assert state["library"] is None and state["released"] == []
    assert out["maps"] == out["extra"]["before"]  # nothing loaded, nothing unloaded
    assert not any(os.path.samefile(p, library) for p in out["maps"])
    assert out["extra"]["guard"] == ["applied"]  # the patch route
    assert out["extra"]["keys"] != [] and out["extra"]["python"]["aten::abs.out"] != []


@needs_cuda_torch
@pytest.mark.slow
def test_without_a_capable_nvrtc_the_guard_registers(nvrtc_libraries: dict[str, str]) -> None:
    version, why = LACKING[MAJOR]  # type: ignore[index]
    lacking = _library(nvrtc_libraries, version)
    code = (
        "import blackwell_compat as bc\n" + KERNELS + "with bc.emulate('sm_121'):\n"
        "    report = bc.apply()\n"
        "    extra = python_kernels()\n"
        "    extra['guard'] = [e.state for e in report.entries if e.name == 'torch']\n" + TAIL
    )
    out = _run(code, nvrtc=lacking)
    state = out["state"]
    assert state["status"] == remedy.UNAVAILABLE
    assert any(c["verdict"].endswith(why) for c in state["candidates"]), state
    assert out["extra"]["guard"] == ["applied"]
    assert out["extra"]["python"]["aten::abs.out"] != [] and out["extra"]["keys"] != []
    assert not any(os.path.samefile(p, lacking) for p in out["maps"])  # never loaded here


# -- pieces that load nothing -----------------------------------------------------------------


def test_soname_torch_opens_per_cuda_major() -> None:
    assert remedy.soname_for(12) == "libnvrtc.so.12" and remedy.soname_for(11) == "libnvrtc.so.11.2"


def test_sources_in_the_documented_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def lib(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "libnvrtc.so.12").write_bytes(b"")
        return folder / "libnvrtc.so.12"

    explicit = lib(tmp_path / "mine" / "lib64")
    cached = lib(tmp_path / "cache" / "compilers" / "nvrtc" / "cu12" / "12.9.86")
    (cached.parent / "manifest.json").write_text('{"kind": "nvrtc"}')
    toolkit = lib(tmp_path / "cuda" / "lib64")
    wheel = lib(tmp_path / "site" / "nvidia" / "cuda_nvrtc" / "lib")
    monkeypatch.setenv("BLACKWELL_COMPAT_CACHE_DIR", str(tmp_path / "cache"))
    env = {config.NVRTC: str(tmp_path / "mine"), "CUDA_HOME": str(tmp_path / "cuda")}
    found = remedy.candidate_paths("libnvrtc.so.12", 12, env, [str(tmp_path / "site"), ""])
    paths = [p for p, _ in found]
    assert paths[:2] == [str(explicit), str(cached)]
    assert paths.index(str(toolkit)) < paths.index(str(wheel))
    origins = dict(found)
    assert origins[str(explicit)] == config.NVRTC
    assert origins[str(toolkit)].startswith("CUDA toolkit CUDA_HOME=")


@pytest.mark.parametrize("value", ["/no/such/nvrtc", "~/missing-nvrtc-folder"])
def test_bad_variable_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match=r"BLACKWELL_COMPAT_NVRTC.*no such file or folder"):
        config.nvrtc_from_env({config.NVRTC: value})
    problems = config.environment_problems({}, {config.NVRTC: value})
    assert any("BLACKWELL_COMPAT_NVRTC" in p for p in problems)


def test_off_words_turn_it_off() -> None:
    for word in ("0", "off", "False", " no "):
        assert config.nvrtc_remedy_off({config.NVRTC: word})
        assert config.nvrtc_from_env({config.NVRTC: word}) is None
    assert not config.nvrtc_remedy_off({})
    assert not config.nvrtc_remedy_off({config.NVRTC: "/x"})


def test_nothing_served_in_the_test_process() -> None:
    assert remedy.active() is None and remedy.served_archs() == frozenset()
    assert remedy.revert() == []


@pytest.mark.slow
def test_compile_verdicts_are_stored_per_file(
    nvrtc_libraries: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remedy's compile test runs once per library file (not at every interpreter start)."""
    from blackwell_compat.probing import isolation

    monkeypatch.setenv("BLACKWELL_COMPAT_CACHE_DIR", str(tmp_path))
    capable = nvrtc_libraries["12.9.86"]
    builtins = os.path.join(os.path.dirname(capable), "libnvrtc-builtins.so.12.9")
    first = isolation.compile_verdict(capable, "sm_121", [builtins])
    assert first is not None and first["ok"] and first["result"]["result"] == 0
    lacking = isolation.compile_verdict(nvrtc_libraries["12.8.93"], "sm_121")
    assert lacking is not None and lacking["result"]["result"] == 5
    assert "invalid value for --gpu-architecture" in lacking["result"]["log"]

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("tested again although the verdict is stored")

    monkeypatch.setattr(isolation, "run_test_child", no_child)
    assert isolation.compile_verdict(capable, "sm_121", [builtins]) == first


@needs_cuda_torch
@pytest.mark.slow
def test_torchs_copy_held_by_someone_else_is_never_unloaded(
    nvrtc_libraries: dict[str, str],
) -> None:
    """After `import torch` the program itself also opened torch's NVRTC: two dlclose leave it
    mapped, so the remedy takes its reference back and changes nothing."""
    library = _library(nvrtc_libraries, CAPABLE[MAJOR])  # type: ignore[index]
    code = (
        "import ctypes, torch\n"
        "import blackwell_compat as bc\n"
        "from blackwell_compat.probing.locate import find_nvrtc\n"
        "own = find_nvrtc(in_process=False, read=False).path\n"
        "mine = ctypes.CDLL(own)  # the program's own reference\n"
        "maps = lambda: sorted(\n"
        "    {l.split()[-1] for l in open('/proc/self/maps') if 'libnvrtc' in l})\n"
        "before = maps()\n"
        "with bc.emulate('sm_121'):\n"
        "    report = bc.apply()\n"
        "extra = {'own': own, 'before': before, 'after': maps(),\n"
        "         'guard': [e.state for e in report.entries if e.name == 'torch']}\n"
        "a, b = ctypes.c_int(), ctypes.c_int()\n"
        "mine.nvrtcVersion(ctypes.byref(a), ctypes.byref(b))  # still callable\n"
        "extra['mine'] = f'{a.value}.{b.value}'\n" + TAIL
    )
    out = _run(code, nvrtc=library)
    state, extra = out["state"], out["extra"]
    assert state["status"] == remedy.FAILED, state
    if _torch_links_nvrtc():  # torch >= 2.15: refused earlier, for a reason of its own
        assert "libtorch_cuda.so links libnvrtc.so" in state["reason"]
    else:
        assert "held by something besides torch's preload" in state["reason"]
    assert state["released"] == [] and state["library"] is not None
    assert extra["after"] == extra["before"]  # nothing unloaded, nothing loaded
    assert not any(os.path.samefile(p, library) for p in out["maps"])
    assert extra["guard"] == ["applied"]  # the patch route serves
    assert out["version"] == extra["mine"]  # dlopen(soname) still returns torch's own


@needs_cuda_torch
@pytest.mark.slow
def test_a_library_the_program_loaded_before_torch_is_never_unloaded(
    nvrtc_libraries: dict[str, str], tmp_path: Path
) -> None:
    """The program loaded an NVRTC of torch's soname itself (a copy of torch's own, outside
    torch's folder) before `import torch`: dlopen(soname) returns it, it holds one reference, and
    the remedy must not drop it (two dlclose would unload it from under the program)."""
    library = _library(nvrtc_libraries, CAPABLE[MAJOR])  # type: ignore[index]
    own = find_nvrtc(in_process=False, read=False).path
    assert own is not None
    copy = tmp_path / os.path.basename(own)
    shutil.copy2(own, copy)
    code = (
        "import ctypes\n"
        f"mine = ctypes.CDLL({str(copy)!r})  # the program's own, before torch\n"
        "import torch\n"
        "import blackwell_compat as bc\n"
        "with bc.emulate('sm_121'):\n"
        "    report = bc.apply()\n"
        "a, b = ctypes.c_int(), ctypes.c_int()\n"
        "mine.nvrtcVersion(ctypes.byref(a), ctypes.byref(b))  # still callable\n"
        "extra = {'guard': [e.state for e in report.entries if e.name == 'torch'],\n"
        "         'mine': f'{a.value}.{b.value}'}\n" + TAIL
    )
    out = _run(code, nvrtc=library)
    state, extra = out["state"], out["extra"]
    if MAJOR == 12:
        # torch's NVRTC 12.4, copied, lacks sm_121: the remedy is needed but may not release.
        assert state["status"] == remedy.FAILED, state
        assert "is not torch's own NVRTC" in state["reason"] and str(copy) in state["reason"]
        assert extra["guard"] == ["applied"]  # the patch route serves
    else:
        # A copy of NVRTC 13.0 lists sm_121 itself: the probe judges the library torch will
        # call by its real list, so nothing is needed (and nothing is touched).
        assert state["status"] == remedy.NOT_NEEDED, state
    assert state["released"] == []
    assert any(os.path.samefile(p, copy) for p in out["maps"])  # still mapped
    assert not any(os.path.samefile(p, library) for p in out["maps"])  # nothing loaded
    assert out["version"] == extra["mine"]


# -- issue 21: what held, and what failed -----------------------------------------------------


@needs_cuda_torch
@pytest.mark.slow
def test_a_folder_whose_name_holds_a_newline_serves(
    nvrtc_libraries: dict[str, str], tmp_path: Path
) -> None:
    """The kernel writes a newline of a mapped file's name as \\012 in /proc/self/maps: before,
    the remedy loaded the library, did not find it mapped, and dropped it as "dlopen still
    returns None"."""
    version = CAPABLE[MAJOR]  # type: ignore[index]
    original = Path(_library(nvrtc_libraries, version))
    folder = tmp_path / "odd\nname"
    folder.mkdir()
    for item in original.parent.iterdir():
        if item.name.startswith("libnvrtc"):
            shutil.copy2(item, folder / item.name)
    library = str(folder / original.name)
    code = "import blackwell_compat as bc\nwith bc.emulate('sm_121'):\n    bc.apply()\n" + TAIL
    out = _run(code, nvrtc=str(folder))
    _assert_served(out, library, version)


@needs_cuda_torch
@pytest.mark.slow
def test_release_holds_with_busy_threads_and_after_torchs_own_calls(
    nvrtc_libraries: dict[str, str], tmp_path: Path
) -> None:
    """Held in the red-team round, kept: torch's copy is released (or, where torch links NVRTC
    itself, left alone with the reason) while other threads run ops, after
    ``torch.cuda.is_available()``, ``torch.jit.script`` and ``import torch.utils.cpp_extension``."""
    version = CAPABLE[MAJOR]  # type: ignore[index]
    library = _library(nvrtc_libraries, version)
    code = (
        "import threading, torch\n"
        "import torch.utils.cpp_extension\n"
        "stop = threading.Event()\n"
        "def busy():\n"
        "    while not stop.is_set():\n"
        "        torch.ones(256).mul_(2).sum()\n"
        "threads = [threading.Thread(target=busy, daemon=True) for _ in range(3)]\n"
        "[t.start() for t in threads]\n"
        "try:\n"
        "    available = torch.cuda.is_available()\n"
        "    @torch.jit.script\n"
        "    def twice(x: torch.Tensor) -> torch.Tensor:\n"
        "        return x * 2\n"
        "    twice(torch.ones(2))\n"
        "    import blackwell_compat as bc\n"
        "    with bc.emulate('sm_121'):\n"
        "        bc.apply()\n"
        "finally:\n"
        "    stop.set()\n"
        "    [t.join() for t in threads]\n"
        "extra = {'available': available, 'initialised': torch.cuda.is_initialized()}\n" + TAIL
    )
    script = tmp_path / "busy.py"  # TorchScript reads the function's source from a file
    script.write_text(code)
    out = _run(code, nvrtc=library, argv=[sys.executable, str(script)])
    assert out["extra"] == {"available": False, "initialised": False}
    if _torch_links_nvrtc():
        assert out["state"]["status"] == remedy.FAILED
        assert "links libnvrtc.so" in out["state"]["reason"]
        return
    _assert_served(out, library, version)
    assert out["state"]["released"]


def test_apply_while_torch_is_being_imported_says_so(tmp_path: Path) -> None:
    """Before: "CUDA is already initialised", which was false (another thread was inside
    `import torch`).  A stand-in torch whose import waits for the test keeps it half-imported."""
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "version.py").write_text("__version__ = '2.6.0'\ncuda = '12.4'\n")
    (fake / "__init__.py").write_text(
        "import os, time\n"
        "open(os.environ['BC_TEST_STARTED'], 'w').close()\n"
        "while not os.path.exists(os.environ['BC_TEST_GO']):\n"
        "    time.sleep(0.01)\n"
    )
    started, go = tmp_path / "started", tmp_path / "go"
    code = textwrap.dedent(
        f"""
        import json, os, threading, time
        from blackwell_compat.remedies import nvrtc as r
        importer = threading.Thread(target=lambda: __import__("torch"))
        importer.start()
        while not os.path.exists({str(started)!r}):
            time.sleep(0.01)
        state = r.activate()  # emulated sm_121 (the variable): bc.emulate would import torch
        open({str(go)!r}, "w").close()
        importer.join()
        print({MARK!r} + json.dumps(state.as_dict()))
        """
    )
    out = _run(
        code,
        nvrtc="",
        PYTHONPATH=str(tmp_path / "site"),
        BC_TEST_STARTED=str(started),
        BC_TEST_GO=str(go),
        BLACKWELL_COMPAT_EMULATE="sm_121",
    )
    assert out["status"] == remedy.TOO_LATE, out
    assert "torch is still being imported" in out["reason"]
    assert "CUDA is already initialised" not in out["reason"]
    assert out["library"] is None and out["released"] == []


def test_a_relative_cuda_toolkit_folder_is_never_a_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CUDA_HOME=.`` meant a different folder in every working directory (and a library
    loaded from it)."""
    planted = tmp_path / "lib64" / "libnvrtc.so.12"
    planted.parent.mkdir()
    planted.write_bytes(b"\x7fELF planted")
    monkeypatch.chdir(tmp_path)
    env = {"CUDA_HOME": ".", "CUDA_PATH": "lib64/.."}
    paths = [p for p, _ in remedy.candidate_paths("libnvrtc.so.12", 12, env, search_path=[])]
    assert not any(os.path.samefile(p, planted) for p in paths)
    _, considered, _ = remedy.find_capable(
        ["sm_121"], TorchBuild(location="/x", version="2.6.0", cuda="12.4"), env=env
    )
    refusals = [c.verdict for c in considered if c.origin.startswith("CUDA toolkit CUDA_")]
    assert refusals == [
        "CUDA_HOME='.' is a relative path: not used (it would name a different folder in every "
        "working directory)",
        "CUDA_PATH='lib64/..' is a relative path: not used (it would name a different folder in "
        "every working directory)",
    ]
