"""The ptxas remedy: Triton gets a ptxas that knows the GPU through the variable it reads.

Real binaries where they prove something (Triton's bundled ptxas, the 12.9 ptxas from NVIDIA's
wheel, Triton itself compiling for a GB10 target without a GPU); stand-in tools and a stand-in
Triton folder for the choices (which variable, never overriding the user, revert).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.compiler_wheels import PTXAS_CU12, download
from support.ptxas_tools import make_tool, make_triton

from blackwell_compat import children
from blackwell_compat.probing.ptxas import (
    PTXAS_BLACKWELL_ENV,
    PTXAS_ENV,
    _triton_dir,
    find_ptxas_binaries,
    probe_tool,
)
from blackwell_compat.remedies import ptxas as remedy
from blackwell_compat.remedies.fetch import fetch

VARIABLES = (PTXAS_ENV, PTXAS_BLACKWELL_ENV, remedy.USER_VARIABLE, "PYTEST_CURRENT_TEST")


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    yield
    remedy.revert()
    monkeypatch.undo()
    assert {k: v for k, v in os.environ.items() if k not in VARIABLES} == {
        k: v for k, v in before.items() if k not in VARIABLES
    }


@pytest.fixture(scope="session")
def fetched_cache(tmp_path_factory) -> Path:
    """A cache holding the real ptxas 12.9 from nvidia-cuda-nvcc-cu12 (fetched once)."""
    root = tmp_path_factory.mktemp("ptxas-cache")
    wheel = download(*PTXAS_CU12, tmp_path_factory.mktemp("ptxas-wheel"))
    old = os.environ.get("BLACKWELL_COMPAT_CACHE_DIR")
    os.environ["BLACKWELL_COMPAT_CACHE_DIR"] = str(root)
    try:
        fetch("ptxas", cuda_major=12, wheel=wheel, archs=["sm_121"])
    finally:
        if old is None:
            del os.environ["BLACKWELL_COMPAT_CACHE_DIR"]
        else:
            os.environ["BLACKWELL_COMPAT_CACHE_DIR"] = old
    return root


def cached_ptxas(root: Path) -> str:
    return str(root / "compilers" / "ptxas" / PTXAS_CU12[1] / "bin" / "ptxas")


def fake_triton(tmp_path, *, blackwell_tool, refuses=()):
    """A Triton folder with stand-in tools whose ``ptxas_get_version`` refuses *refuses*."""
    triton = Path(make_triton(tmp_path, blackwell_tool=blackwell_tool, blackwell_release="12.8"))
    if blackwell_tool:  # its blackwell tool is too old, as Triton 3.5's single 12.8 one was
        make_tool(triton / "backends" / "nvidia" / "bin" / "ptxas-blackwell", "12.8")
    for folder in (triton, triton / "backends", triton / "backends" / "nvidia"):
        (folder / "__init__.py").write_text("")
    (triton / "backends" / "nvidia" / "compiler.py").write_text(
        textwrap.dedent(
            f"""
            def ptx_get_version(cuda_version):
                if cuda_version in {list(refuses)!r}:
                    raise RuntimeError("Triton only support CUDA 10.0 or higher, but got "
                                       "CUDA version: " + cuda_version)
                return 80
            """
        )
    )
    return str(triton)


# -- real binaries ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_fetched_ptxas_accepts_sm_121a_where_tritons_bundled_one_does_not(fetched_cache):
    triton = _triton_dir()
    assert triton is not None, "both test environments install triton"
    bundled = os.path.join(triton, "backends", "nvidia", "bin", "ptxas")
    names = remedy.gpu_names("sm_121")
    assert names == ["sm_121a", "sm_121"]
    old = probe_tool(bundled, "ptxas", "bundled", names)
    new = probe_tool(cached_ptxas(fetched_cache), "ptxas", "cache", names)
    assert new.version == "12.9" and new.accepts == {"sm_121a": True, "sm_121": True}
    if old.version in ("12.4", "12.8"):
        # Triton 3.2 bundles 12.4, Triton 3.6 12.8 (its ptxas-blackwell is 12.9)
        assert old.accepts == {"sm_121a": False, "sm_121": False}
        assert "is not defined for option 'gpu-name'" in old.errors["sm_121a"]
    else:
        # Newer Triton (3.9 bundles 12.9 as ptxas too) knows sm_121a: nothing to remedy there
        assert old.version is not None and tuple(map(int, old.version.split("."))) >= (12, 9)
        assert old.accepts == {"sm_121a": True, "sm_121": True}


_COMPILE = r"""
import json, os, sys
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

@triton.jit
def add_one(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + i, tl.load(x_ptr + i, mask=i < n) + 1.0, mask=i < n)

def compile_for_gb10():
    sig = {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32"}
    try:
        src = ASTSource(add_one, sig, constexprs={"BLOCK": 64})
    except TypeError:  # Triton 3.2
        sig["BLOCK"] = "constexpr"
        src = ASTSource(add_one, sig, constants={"BLOCK": 64})
    try:
        kernel = triton.compile(src, target=GPUTarget("cuda", 121, 32))
        return {"ok": True, "cubin": len(kernel.asm["cubin"])}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:3000]}

from blackwell_compat.remedies import ptxas as remedy
before = compile_for_gb10()
report = remedy.activate("sm_121")
env = {k: os.environ.get(k) for k in ("TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH")}
after = compile_for_gb10()
print("RESULT" + json.dumps({"triton": triton.__file__, "before": before,
                             "report": report.as_dict(), "env": env, "after": after}))
"""


def mirror_with_old_blackwell_tool(triton: str, into: Path) -> Path:
    """A copy of the installed Triton made of links, whose ``ptxas-blackwell`` is a stand-in
    ptxas 12.8 that rejects sm_121a as the real 12.8 does: a Triton whose bundled Blackwell
    tool lacks the GB10, as Triton 3.5's did (Triton 3.6 bundles 12.8 as ``ptxas``, 3.9 bundles
    12.9: a stand-in keeps the test the same on every Triton)."""
    bin_dir = os.path.join("backends", "nvidia", "bin")
    for root, dirs, files in os.walk(triton):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(root, triton)
        (into / "triton" / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            target = into / "triton" / rel / name
            if rel == bin_dir and name == "ptxas-blackwell":
                make_tool(target, "12.8", rejects=("sm_121a", "sm_121", "sm_103a"))
                continue
            os.symlink(os.path.join(root, name), target)
    return into


@pytest.mark.slow
def test_triton_compiles_for_gb10_only_after_the_remedy(fetched_cache, tmp_path):
    """Triton 3.6-3.8: fails before (a Blackwell ptxas that rejects sm_121a, as 3.5 bundled),
    compiles after.  Triton 3.2: fails before, and the remedy declines: that Triton refuses
    ptxas 12.9.  Triton >= 3.9 (its tools are 12.9, and its LLVM aborts the process for a
    ptxas older than 12.9, so no stand-in can play an old tool there): compiles as installed,
    and the remedy sets nothing."""
    triton = _triton_dir()
    assert triton is not None
    version = tuple(int(p) for p in importlib.metadata.version("triton").split(".")[:2])
    two_tools = version >= (3, 6)
    modern = version >= (3, 9)
    mirrored = two_tools and not modern
    prefix = str(mirror_with_old_blackwell_tool(triton, tmp_path / "mirror")) if mirrored else ""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env.update(BLACKWELL_COMPAT_CACHE_DIR=str(fetched_cache), TRITON_CACHE_DIR=str(tmp_path / "tc"))
    script = tmp_path / "compile_for_gb10.py"  # @triton.jit needs its source in a file
    script.write_text(_COMPILE)
    done = subprocess.run(
        [sys.executable, str(script), prefix],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT") :])
    assert result["triton"].startswith(prefix or triton)
    before, report, after = result["before"], result["report"], result["after"]
    if modern:
        assert before["ok"] and after["ok"], result
        assert report["active"] is False and report["path"] is not None, report
        assert result["env"] == {PTXAS_ENV: None, PTXAS_BLACKWELL_ENV: None}
        return
    assert not before["ok"]
    assert "is not defined for option 'gpu-name'" in before["error"]
    if two_tools:
        assert report["active"] is True, report
        assert report["variable"] == PTXAS_BLACKWELL_ENV
        assert report["path"] == cached_ptxas(fetched_cache)
        assert report["version"] == "12.9"
        assert result["env"] == {PTXAS_ENV: None, PTXAS_BLACKWELL_ENV: report["path"]}
        assert after["ok"] and after["cubin"] > 0, after
    else:
        assert report["active"] is False, report
        assert report["variable"] == PTXAS_ENV
        assert any(
            cached_ptxas(fetched_cache) in line and "this triton refuses ptxas 12.9" in line
            for line in report["rejected"]
        ), report
        assert result["env"] == {PTXAS_ENV: None, PTXAS_BLACKWELL_ENV: None}
        assert not after["ok"]


# -- choices, with stand-in tools ---------------------------------------------------------------


def test_sets_the_blackwell_variable_of_a_two_tool_triton_and_reverts(tmp_path, monkeypatch):
    triton = fake_triton(tmp_path, blackwell_tool=True)
    good = make_tool(tmp_path / "good" / "bin" / "ptxas", "12.9", rejects=())
    monkeypatch.setenv(remedy.USER_VARIABLE, str(tmp_path / "good"))
    before = dict(os.environ)
    report = remedy.activate("sm_121", triton_dir=triton)
    assert report.active and report.variable == PTXAS_BLACKWELL_ENV
    assert report.path == good and report.source == remedy.USER_VARIABLE
    assert "rejects sm_121a" in report.reason
    assert os.environ[PTXAS_BLACKWELL_ENV] == good and PTXAS_ENV not in os.environ
    assert remedy.active() == [report]
    child = subprocess.run(
        [sys.executable, "-c", f"import os; print(os.environ[{PTXAS_BLACKWELL_ENV!r}])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == good  # children started afterwards inherit it
    assert remedy.revert() == [f"{PTXAS_BLACKWELL_ENV} removed (it named {good})"]
    assert dict(os.environ) == before
    assert remedy.active() == []


def test_older_triton_reads_one_variable_for_every_gpu(tmp_path, monkeypatch):
    triton = fake_triton(tmp_path, blackwell_tool=False)
    good = make_tool(tmp_path / "good" / "ptxas", "12.9", rejects=())
    monkeypatch.setenv(remedy.USER_VARIABLE, good)
    report = remedy.activate("sm_121", triton_dir=triton)
    assert report.active and report.variable == PTXAS_ENV and os.environ[PTXAS_ENV] == good
    assert PTXAS_BLACKWELL_ENV not in os.environ


def test_a_variable_the_user_set_is_never_overridden(tmp_path, monkeypatch):
    triton = fake_triton(tmp_path, blackwell_tool=True)
    users = make_tool(tmp_path / "users" / "ptxas", "12.8")
    good = make_tool(tmp_path / "good" / "ptxas", "12.9", rejects=())
    monkeypatch.setenv(PTXAS_BLACKWELL_ENV, users)
    monkeypatch.setenv(remedy.USER_VARIABLE, good)
    report = remedy.activate("sm_121", triton_dir=triton)
    assert not report.active
    assert "was set by the user and is not overridden" in report.reason
    assert os.environ[PTXAS_BLACKWELL_ENV] == users
    assert remedy.revert() == []
    assert os.environ[PTXAS_BLACKWELL_ENV] == users


def test_nothing_is_set_when_tritons_ptxas_already_accepts(tmp_path, monkeypatch):
    triton = make_triton(tmp_path, blackwell_tool=True)  # ptxas-blackwell 12.9 accepts
    monkeypatch.setenv(remedy.USER_VARIABLE, make_tool(tmp_path / "g" / "ptxas", "13.0", ()))
    report = remedy.activate("sm_121", triton_dir=triton)
    assert not report.active and "already accepts sm_121a" in report.reason
    assert PTXAS_BLACKWELL_ENV not in os.environ and remedy.active() == []


def test_an_explicit_choice_that_fails_is_reported_not_replaced(tmp_path, monkeypatch):
    triton = fake_triton(tmp_path, blackwell_tool=True)
    bad = make_tool(tmp_path / "bad" / "ptxas", "12.8")
    monkeypatch.setenv(remedy.USER_VARIABLE, bad)
    report = remedy.activate("sm_121", triton_dir=triton)
    assert not report.active and PTXAS_BLACKWELL_ENV not in os.environ
    assert len(report.rejected) == 1 and report.rejected[0].startswith(f"{bad}: ptxas 12.8")
    assert "fetch ptxas" in report.reason
    monkeypatch.setenv(remedy.USER_VARIABLE, str(tmp_path / "missing"))
    report = remedy.activate("sm_121", triton_dir=triton)
    assert report.rejected == (f"{tmp_path / 'missing'}: not an executable file",)


def test_a_release_the_installed_triton_refuses_is_passed_over(tmp_path, monkeypatch):
    triton = fake_triton(tmp_path, blackwell_tool=False, refuses=("12.9",))
    refused = make_tool(tmp_path / "a" / "ptxas", "12.9", rejects=())
    monkeypatch.setenv(remedy.USER_VARIABLE, refused)
    report = remedy.activate("sm_121", triton_dir=triton)
    assert not report.active and PTXAS_ENV not in os.environ
    assert "this triton refuses ptxas 12.9: Triton only support CUDA" in report.rejected[0]
    assert remedy.triton_accepts_release(triton, "12.6") == (True, "ok")


def test_revert_leaves_a_variable_changed_since(tmp_path, monkeypatch):
    triton = fake_triton(tmp_path, blackwell_tool=True)
    monkeypatch.setenv(remedy.USER_VARIABLE, make_tool(tmp_path / "g" / "ptxas", "12.9", ()))
    assert remedy.activate("sm_121", triton_dir=triton).active
    os.environ[PTXAS_BLACKWELL_ENV] = "/elsewhere/ptxas"
    assert remedy.active() == []
    lines = remedy.revert()
    assert lines == [
        f"{PTXAS_BLACKWELL_ENV} left as it is: changed since it was set ('/elsewhere/ptxas')"
    ]
    assert os.environ[PTXAS_BLACKWELL_ENV] == "/elsewhere/ptxas"


def test_the_cache_comes_before_the_toolkits(tmp_path, fetched_cache, monkeypatch):
    monkeypatch.setenv("BLACKWELL_COMPAT_CACHE_DIR", str(fetched_cache))
    listed = remedy.candidates(env={"PATH": ""})
    assert listed[0] == (
        cached_ptxas(fetched_cache),
        f"the cache ({Path(cached_ptxas(fetched_cache)).parent.parent})",
    )


def test_apply_serves_each_real_gpu_and_revert_undoes_it(monkeypatch):
    from blackwell_compat import engine
    from blackwell_compat.probing import GPU, NvrtcInfo, build_platform

    platform = build_platform(gpus=[GPU(0, "NVIDIA GB10", capability=(12, 1))], nvrtc=NvrtcInfo())
    monkeypatch.setattr(engine, "probe", lambda: platform)
    engine.apply(only=[])
    assert [r.arch for r in remedy.reports()] == ["sm_121"]
    engine.revert()
    assert remedy.reports() == []


# The start-up activation (and so the ptxas remedy) runs when the command imports torch.
_SHOW = (
    "import os, subprocess, sys, torch;"
    "names = ('TRITON_PTXAS_PATH', 'TRITON_PTXAS_BLACKWELL_PATH');"
    "print([os.environ.get(n) for n in names]);"
    "sys.stdout.flush();"
    "subprocess.run([sys.executable, '-c', "
    "'import os; print([os.environ.get(n) for n in %r])' % (names,)], check=True)"
)


@pytest.mark.slow
def test_run_on_a_gb10_gives_the_command_and_its_children_the_variable(fetched_cache, tmp_path):
    """`run` on a machine whose NVML reports a GB10 (a stand-in libnvidia-ml.so.1): the start-up
    activation's apply(), at `import torch`, sets the variable; the command and a process it
    starts afterwards both see it."""
    from support.environ import clean_env
    from support.native_fakes import nvml_folder

    triton = _triton_dir()
    assert triton is not None
    version = tuple(int(p) for p in importlib.metadata.version("triton").split(".")[:2])
    two_tools = version >= (3, 6)
    prefix = str(mirror_with_old_blackwell_tool(triton, tmp_path / "mirror")) if two_tools else ""
    nvml = nvml_folder(tmp_path / "nvml")  # reports one GPU of compute capability 12.1
    env = clean_env(
        BLACKWELL_COMPAT_CACHE_DIR=str(fetched_cache),
        LD_LIBRARY_PATH=f"{nvml}:{os.environ.get('LD_LIBRARY_PATH', '')}",
    )
    for name in VARIABLES:
        env.pop(name, None)
    if prefix:
        env["PYTHONPATH"] = prefix
    done = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "run", "--", sys.executable, "-c", _SHOW],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], done.stdout + done.stderr
    if two_tools:  # the mirror's ptxas-blackwell (12.8) rejects sm_121a: served from the cache
        assert lines[0] == repr([None, cached_ptxas(fetched_cache)])
    else:  # Triton 3.2 refuses ptxas 12.9: nothing set
        assert lines[0] == repr([None, None])


def test_activate_for_turns_a_failure_into_a_report():
    reports = remedy.activate_for(["sm_121", "not-an-arch"])
    assert [r.arch for r in reports][1] == "not-an-arch"
    assert not reports[1].active and reports[1].reason.startswith("failed: ConfigError")


def test_the_triton_check_child_never_starts_the_library_again(tmp_path, monkeypatch):
    """Under the start-up hook (AUTO=1) the check's interpreter would run apply(), whose ptxas
    remedy starts the check again: without a clean environment, processes without end (seen:
    160 orphaned interpreters in two minutes while a GB10 stand-in was being tested)."""
    monkeypatch.setenv("BLACKWELL_COMPAT_AUTO", "1")
    monkeypatch.setenv("BLACKWELL_COMPAT_EMULATE", "sm_121")
    monkeypatch.setenv("_BLACKWELL_COMPAT_AUDIT", str(tmp_path))
    seen: list[dict[str, str]] = []
    real_run = children.run

    def recording_run(*args, **kwargs):
        seen.append(dict(kwargs.get("env") or os.environ))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(children, "run", recording_run)
    remedy.triton_accepts_release(str(tmp_path / "triton"), "12.9", timeout=60)
    assert seen, "the check ran no child"
    for env in seen:
        assert not {"BLACKWELL_COMPAT_AUTO", "BLACKWELL_COMPAT_EMULATE"} & set(env)
        assert "_BLACKWELL_COMPAT_AUDIT" not in env


# -- issue 21: nothing from the working directory; honest reasons ----------------------------


def test_an_empty_path_entry_never_runs_a_ptxas_of_the_working_directory(tmp_path, monkeypatch):
    """``PATH="$EXTRA:$PATH"`` with EXTRA unset: before, the remedy ran ``./ptxas`` and set
    ``TRITON_PTXAS_BLACKWELL_PATH=ptxas`` (and the doctor advised exporting it)."""
    triton = fake_triton(tmp_path, blackwell_tool=True)
    work = tmp_path / "work"
    planted = make_tool(work / "ptxas", "12.9", rejects=())
    monkeypatch.chdir(work)
    monkeypatch.setenv("PATH", ":" + os.environ.get("PATH", ""))
    monkeypatch.setenv("BLACKWELL_COMPAT_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv(remedy.USER_VARIABLE, raising=False)
    assert not any(os.path.samefile(p, planted) for p in find_ptxas_binaries())
    assert all(os.path.isabs(p) for p in find_ptxas_binaries())
    report = remedy.activate("sm_121", triton_dir=triton)
    value = os.environ.get(PTXAS_BLACKWELL_ENV)
    assert value != "ptxas" and report.path != "ptxas"
    if value is not None:  # a real capable ptxas elsewhere on this machine: absolute, not ours
        assert os.path.isabs(value) and not os.path.samefile(value, planted)


def test_a_relative_ptxas_variable_is_refused(tmp_path, monkeypatch):
    import blackwell_compat as bc
    from blackwell_compat.errors import ConfigError

    triton = fake_triton(tmp_path, blackwell_tool=True)
    make_tool(tmp_path / "ptxas", "12.9", rejects=())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(remedy.USER_VARIABLE, "./ptxas")
    with pytest.raises(ConfigError, match=r"BLACKWELL_COMPAT_PTXAS='\./ptxas' is a relative path"):
        remedy.activate("sm_121", triton_dir=triton)
    with pytest.raises(ConfigError, match="is a relative path"):
        bc.apply()
    assert PTXAS_BLACKWELL_ENV not in os.environ


def test_a_variable_the_user_removed_is_not_blamed_on_another_gpu(tmp_path, monkeypatch):
    """Before: "was set for another GPU" after the user deleted the variable."""
    triton = fake_triton(tmp_path, blackwell_tool=True)
    good = make_tool(tmp_path / "good" / "ptxas", "12.9", rejects=())
    monkeypatch.setenv(remedy.USER_VARIABLE, good)
    assert remedy.activate("sm_121", triton_dir=triton).active
    del os.environ[PTXAS_BLACKWELL_ENV]
    report = remedy.activate("sm_121", triton_dir=triton)
    assert not report.active and PTXAS_BLACKWELL_ENV not in os.environ
    assert "another GPU" not in report.reason
    assert report.reason.startswith(
        f"{PTXAS_BLACKWELL_ENV}, which the remedy had set to {good!r}, was removed from the "
        "environment since; it is not set again"
    )
    remedy.revert()  # forgets what it set: apply() sets it again from here
    assert remedy.activate("sm_121", triton_dir=triton).active
