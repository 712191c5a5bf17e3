"""Start-up activation: the installed ``.pth`` hook and :mod:`blackwell_compat.autostart`.

Most tests start real interpreters of this environment (the hook only runs at start-up) with a
synthetic third-party patch: a ``.dist-info`` folder with an entry point, put on PYTHONPATH,
which ``importlib.metadata`` discovers exactly like an installed distribution.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from blackwell_compat import autostart, engine
from blackwell_compat.errors import BlackwellCompatWarning

ROOT = Path(__file__).resolve().parents[1]

DEMO_TARGET = """\
def value():
    return "original"
"""

DEMO_PATCH = """\
from blackwell_compat import Patch


class DemoPatch(Patch):
    name = "bcdemo"
    summary = "start-up test patch"
    modules = ("bcdemo_target",)
    requires_affected = False

    def apply(self, module, ctx):
        {apply_body}
"""

APPLY_OK = 'ctx.replace_function(module, "value", lambda: "patched")'
APPLY_FAILS = 'raise RuntimeError("demo patch exploded")'


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BLACKWELL_COMPAT_", "_BLACKWELL_COMPAT_"))
        or k == "BLACKWELL_COMPAT_CACHE_DIR"  # the session's verdict store (conftest.py)
    }
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def make_demo_dist(root: Path, apply_body: str = APPLY_OK, *, importable: bool = True) -> Path:
    """A third-party patch distribution 'bcdemo' laid out as site-packages would hold it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "bcdemo_target.py").write_text(DEMO_TARGET)
    if importable:
        (root / "bcdemo_patch.py").write_text(DEMO_PATCH.format(apply_body=apply_body))
    else:
        (root / "bcdemo_patch.py").write_text('raise ImportError("bcdemo_patch is broken")\n')
    info = root / "bcdemo-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bcdemo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[blackwell_compat.patches]\nbcdemo = bcdemo_patch:DemoPatch\n"
    )
    return root


def python(
    code: str, env: dict[str, str], *, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def warning_lines(stderr: str) -> list[str]:
    """One entry per warning shown (a warning may continue on indented lines)."""
    result: list[str] = []
    for line in stderr.splitlines():
        if "BlackwellCompatWarning" in line or line.startswith("blackwell-compat: warning"):
            result.append(line)
        elif result and line.startswith("  "):
            result[-1] += "\n" + line
    return result


IMPORTED_MODULES = (
    "import sys; "
    "print(sorted(m for m in sys.modules if m == 'blackwell_compat' "
    "or m.startswith('blackwell_compat.')))"
)


# -- the installed hook ----------------------------------------------------------------------


def test_hook_is_installed_in_this_environment_with_the_text_setup_py_writes():
    hooks = autostart.installed_hooks()
    assert hooks, (
        f"{autostart.HOOK_FILENAME} is not in {autostart.site_directories()}: install the "
        "project with pip (pip install -e .) before running the tests"
    )
    setup_ns = runpy.run_path(str(ROOT / "setup.py"), run_name="not_main")
    assert setup_ns["HOOK_NAME"] == autostart.HOOK_FILENAME
    assert hooks[0].read_text(encoding="ascii") == setup_ns["HOOK_TEXT"]


def test_hook_file_sorts_after_other_pth_files():
    # site runs .pth files in sorted order; patch packages installed editable must come first
    for other in ("__editable__.acme-1.0.pth", "_acme.pth", "acme.pth", "easy-install.pth"):
        assert sorted([autostart.HOOK_FILENAME, other])[-1] == autostart.HOOK_FILENAME


def test_hook_line_is_one_import_line_that_site_executes():
    setup_ns = runpy.run_path(str(ROOT / "setup.py"), run_name="not_main")
    code_lines = [line for line in setup_ns["HOOK_TEXT"].splitlines() if not line.startswith("#")]
    assert len(code_lines) == 1
    assert code_lines[0].startswith("import ")
    compile(code_lines[0], "<hook>", "exec")


@pytest.mark.parametrize("auto", [None, "", "0"])
def test_unset_hook_imports_nothing(auto):
    extra = {} if auto is None else {"BLACKWELL_COMPAT_AUTO": auto}
    result = python(IMPORTED_MODULES, clean_env(**extra))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert result.stderr == ""


@pytest.mark.parametrize("variable", ["BLACKWELL_COMPAT_AUTO", "BLACKWELL_COMPAT_EMULATE"])
@pytest.mark.parametrize("value", ["false", "off", "no", " 0", "FALSE", "Off ", " "])
def test_off_words_cost_no_import(variable, value):
    # Issue 14, point 15: every value config reads as false leaves the package unimported.
    result = python(IMPORTED_MODULES, clean_env(**{variable: value}))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert result.stderr == ""
    assert not autostart.trigger_set({variable: value})


def test_off_words_are_the_words_config_reads_as_false():
    from blackwell_compat import config, startup_checks

    setup_ns = runpy.run_path(str(ROOT / "setup.py"), run_name="not_main")
    assert set(autostart.OFF_WORDS) == config.FALSE_WORDS
    assert set(startup_checks.OFF_WORDS) == config.FALSE_WORDS
    assert set(startup_checks.TRUE_WORDS) == config.TRUE_WORDS
    assert startup_checks.AUTO == config.AUTO and startup_checks.NVRTC == config.NVRTC
    assert startup_checks.FLAGS == (config.AUTO, config.FORCE, config.VERBOSE)
    assert startup_checks.SELECTION == (config.DISABLE, config.STRATEGY)
    assert tuple(setup_ns["OFF_WORDS"]) == autostart.OFF_WORDS
    for word in autostart.OFF_WORDS:
        assert config.parse_bool("X", {"X": f" {word.upper()} "}) is False
        assert config.emulated_arch_from_env({config.EMULATE: f" {word.upper()} "}) is None


ARMED_ONLY = [
    "blackwell_compat",
    "blackwell_compat._forksafe",
    "blackwell_compat.import_trigger",
    "blackwell_compat.startup_checks",
    "blackwell_compat.startup_hook",
    "blackwell_compat.versions",
]


def test_auto_only_arms_until_torch_is_imported():
    # Issue 22: a process that never imports torch pays for the hook's arming only.
    result = python(IMPORTED_MODULES, clean_env(BLACKWELL_COMPAT_AUTO="1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr(ARMED_ONLY)
    assert result.stderr == ""
    code = """
        import sys
        from blackwell_compat import import_trigger
        print("armed:", import_trigger.armed("torch"))
        import torch
        from blackwell_compat import autostart
        result = autostart.last_result()
        print("started:", result.auto, result.report is not None, result.ok)
        print("engine:", "blackwell_compat.engine" in sys.modules)
        print("armed:", import_trigger.armed("torch"))
    """
    result = python(code, clean_env(BLACKWELL_COMPAT_AUTO="1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "armed: True",
        "started: True True True",
        "engine: True",
        "armed: False",
    ]
    assert warning_lines(result.stderr) == []


def test_the_activation_runs_before_torch_code_runs(tmp_path):
    # The patches are discovered (and the NVRTC remedy runs: tests/test_remedies_nvrtc.py)
    # while torch is not in sys.modules yet: before torch preloads its NVRTC.
    site_dir = make_demo_dist(tmp_path / "site")
    patch_module = site_dir / "bcdemo_patch.py"
    patch_module.write_text(
        "import sys\nsys.bcdemo_saw_torch = 'torch' in sys.modules\n" + patch_module.read_text()
    )
    code = """
        import sys
        import torch
        print("torch seen at activation:", sys.bcdemo_saw_torch)
        print("torch complete:", hasattr(torch, "tensor"))
    """
    result = python(code, clean_env(BLACKWELL_COMPAT_AUTO="1", PYTHONPATH=str(site_dir)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["torch seen at activation: False", "torch complete: True"]


def test_a_target_that_imports_torch_first_is_patched_once_complete(tmp_path):
    # The first import of torch comes from inside the patch's own target: the target is still
    # being imported when the activation runs, and is patched when its import has finished.
    site_dir = make_demo_dist(tmp_path / "site")
    (site_dir / "bcdemo_target.py").write_text("import torch\n\n" + DEMO_TARGET)
    code = """
        import bcdemo_target
        from blackwell_compat import status
        print(bcdemo_target.value(), {s.name: s.state for s in status()}["bcdemo"])
    """
    result = python(code, clean_env(BLACKWELL_COMPAT_AUTO="1", PYTHONPATH=str(site_dir)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "patched applied"
    assert warning_lines(result.stderr) == []


def test_auto_applies_a_patch_before_user_code_runs(tmp_path):
    site_dir = make_demo_dist(tmp_path / "site")
    env = clean_env(BLACKWELL_COMPAT_AUTO="1", PYTHONPATH=str(site_dir))
    code = """
        import sys
        from blackwell_compat import autostart, status
        state = {s.name: s.state for s in status()}
        print("before import:", state["bcdemo"])
        import bcdemo_target
        print("value:", bcdemo_target.value())
        print("started:", autostart.last_result().auto)
    """
    result = python(code, env)
    assert result.returncode == 0, result.stderr
    assert "before import: pending-import" in result.stdout
    assert "value: patched" in result.stdout
    assert "started: True" in result.stdout
    assert warning_lines(result.stderr) == []


def test_without_auto_the_patch_is_not_applied(tmp_path):
    site_dir = make_demo_dist(tmp_path / "site")
    result = python(
        "import bcdemo_target; print(bcdemo_target.value())", clean_env(PYTHONPATH=str(site_dir))
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "original"


CHILDREN_SCRIPT = """\
import concurrent.futures
import multiprocessing
import subprocess
import sys


def value(_=None):
    import bcdemo_target

    return bcdemo_target.value()


if __name__ == "__main__":
    print("main", value())
    out = subprocess.run(
        [sys.executable, "-c", "import bcdemo_target; print(bcdemo_target.value())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    print("subprocess", out)
    for method in ("spawn", "forkserver", "fork"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            print(method, pool.apply(value))
    with concurrent.futures.ProcessPoolExecutor(1) as executor:
        print("executor", executor.submit(value).result())
"""


def test_auto_reaches_subprocesses_and_every_multiprocessing_start_method(tmp_path):
    site_dir = make_demo_dist(tmp_path / "site")
    # A target library of the real kind: it imports torch, which runs the activation.
    (site_dir / "bcdemo_target.py").write_text("import torch\n\n" + DEMO_TARGET)
    script = tmp_path / "children.py"
    script.write_text(CHILDREN_SCRIPT)
    env = clean_env(BLACKWELL_COMPAT_AUTO="1", PYTHONPATH=str(site_dir))
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines == {
        "main": "patched",
        "subprocess": "patched",
        "spawn": "patched",
        "forkserver": "patched",
        "fork": "patched",
        "executor": "patched",
    }
    assert warning_lines(result.stderr) == []


# -- broken states: one warning, the program runs --------------------------------------------


def run_broken(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = python("print('program runs')", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "program runs\n"
    return result


def test_unknown_name_in_disable_gives_one_warning(tmp_path):
    result = run_broken(
        clean_env(BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_DISABLE="no_such_patch")
    )
    lines = warning_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "BLACKWELL_COMPAT_DISABLE" in lines[0] and "'no_such_patch'" in lines[0]
    assert "no patches were applied" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BLACKWELL_COMPAT_AUTO", "maybe"), ("BLACKWELL_COMPAT_FORCE", "perhaps")],
)
def test_malformed_boolean_gives_one_warning(variable, value):
    env = clean_env(BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_DISABLE="all")
    env[variable] = value
    result = run_broken(env)
    lines = warning_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert f"{variable}={value!r}" in lines[0]


def test_malformed_emulate_gives_one_line_and_no_traceback():
    result = run_broken(clean_env(BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_EMULATE="sm_twelve"))
    lines = warning_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "BLACKWELL_COMPAT_EMULATE" in lines[0] and "sm_twelve" in lines[0]
    assert "Traceback" not in result.stderr


def test_patch_that_cannot_be_loaded_gives_one_warning(tmp_path):
    site_dir = make_demo_dist(tmp_path / "site", importable=False)
    env = clean_env(BLACKWELL_COMPAT_AUTO="1", PYTHONPATH=str(site_dir))
    quiet = run_broken(env)  # never imports torch: nothing is activated, nothing to say
    assert quiet.stderr == ""
    result = python("import torch; print('program runs')", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "program runs\n"
    lines = warning_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "'bcdemo'" in lines[0] and "bcdemo_patch is broken" in lines[0]


def test_patch_failing_on_import_of_its_target_gives_one_warning(tmp_path):
    site_dir = make_demo_dist(tmp_path / "site", apply_body=APPLY_FAILS)
    env = clean_env(BLACKWELL_COMPAT_AUTO="1", PYTHONPATH=str(site_dir))
    result = python("import torch, bcdemo_target; print(bcdemo_target.value())", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "original"
    lines = warning_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "demo patch exploded" in lines[0]


def test_the_same_warning_is_shown_once_per_process_tree(tmp_path):
    script = tmp_path / "tree.py"
    script.write_text(
        textwrap.dedent(
            """\
            import multiprocessing
            import subprocess
            import sys

            def hello(_):
                return "child"

            if __name__ == "__main__":
                subprocess.run([sys.executable, "-c", "pass"], check=True)
                with multiprocessing.get_context("spawn").Pool(2) as pool:
                    print(pool.map(hello, range(2)))
            """
        )
    )
    env = clean_env(BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_DISABLE="no_such_patch")
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['child', 'child']"
    assert len(warning_lines(result.stderr)) == 1, result.stderr


def test_a_bad_selection_is_reported_at_start_up_even_without_torch():
    # The unknown name needs the registry to be found: the activation runs at start-up rather
    # than at `import torch`, so the one warning comes before any child process.
    env = clean_env(BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_DISABLE="no_such_patch")
    result = python(IMPORTED_MODULES, env)
    assert result.returncode == 0
    assert "'blackwell_compat.engine'" in result.stdout
    assert len(warning_lines(result.stderr)) == 1, result.stderr


def test_a_selection_checked_by_a_parent_is_not_checked_again(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """            import os, subprocess, sys
            from blackwell_compat import status  # runs the activation: the selection is checked
            status()
            print(os.environ["_BLACKWELL_COMPAT_SELECTION_CHECKED"] != "")
            print(subprocess.run([sys.executable, "-c", sys.argv[1]], capture_output=True,
                                 text=True, check=True).stdout.strip())
            """
        )
    )
    env = clean_env(BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_DISABLE="torch")
    result = subprocess.run(
        [sys.executable, str(script), IMPORTED_MODULES],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, child = result.stdout.splitlines()
    assert first == "True"
    assert child == repr(ARMED_ONLY)  # the child armed only: nothing left to check
    assert warning_lines(result.stderr) == []


CHECKED = "_BLACKWELL_COMPAT_SELECTION_CHECKED"


@pytest.mark.parametrize(
    ("env", "now"),
    [
        ({}, False),
        ({"BLACKWELL_COMPAT_AUTO": "1"}, False),
        ({"BLACKWELL_COMPAT_AUTO": " Yes "}, False),
        ({"BLACKWELL_COMPAT_AUTO": "sometimes"}, True),
        ({"BLACKWELL_COMPAT_FORCE": "perhaps"}, True),
        ({"BLACKWELL_COMPAT_VERBOSE": "loud"}, True),
        ({"BLACKWELL_COMPAT_VERBOSE": "1"}, False),
        ({"BLACKWELL_COMPAT_NVRTC": "off"}, False),
        ({"BLACKWELL_COMPAT_NVRTC": "/no/such/libnvrtc.so.12"}, True),
        ({"BLACKWELL_COMPAT_DISABLE": "torch"}, True),
        ({"BLACKWELL_COMPAT_STRATEGY": "torchaudio=cpu"}, True),
        (
            {
                "BLACKWELL_COMPAT_DISABLE": "torch",
                "_BLACKWELL_COMPAT_SELECTION_CHECKED": "torch\x1f",
            },
            False,
        ),
        (
            {
                "BLACKWELL_COMPAT_DISABLE": "kokoro",
                "_BLACKWELL_COMPAT_SELECTION_CHECKED": "torch\x1f",
            },
            True,
        ),
    ],
)
def test_what_makes_the_activation_run_at_start_up(env, now):
    from blackwell_compat import startup_checks

    assert startup_checks.must_check_now(env) is now


def test_an_existing_nvrtc_path_does_not_run_it_at_start_up(tmp_path):
    from blackwell_compat import startup_checks

    assert not startup_checks.must_check_now({"BLACKWELL_COMPAT_NVRTC": str(tmp_path)})


# -- what it says ----------------------------------------------------------------------------


def test_auto_is_quiet_and_verbose_says_what_serves_each_gpu():
    code = "import os, torch; print(os.getpid()); print(torch.tensor([3 + 4j]).abs().tolist())"
    env = clean_env(BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_EMULATE="sm_121")
    quiet = python(code, env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines()[1] == "[5.0]"
    assert quiet.stderr == ""
    loud = python(code, dict(env, BLACKWELL_COMPAT_VERBOSE="1"))
    assert loud.returncode == 0, loud.stderr
    pid, values = loud.stdout.splitlines()
    assert values == "[5.0]"
    head = f"blackwell-compat: start-up (pid {pid}): "
    lines = loud.stderr.splitlines()
    assert len(lines) == 2, loud.stderr
    assert lines[0].startswith(head + "emulated sm_121 (CPU tensors): patches ("), lines[0]
    assert "torch" in lines[0].split("patches (")[1].split(")")[0].split(", ")
    assert "NVRTC remedy " in lines[0]
    assert "torch.compile: nothing to do" in lines[0]
    prefix = head + "patches applied or waiting for their module: "
    assert lines[1].startswith(prefix), lines[1]
    assert "torch" in lines[1][len(prefix) :].split(", ")


def test_verbose_without_a_gpu_says_so():
    env = clean_env(BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_VERBOSE="1")
    code = """
        import os, torch
        from blackwell_compat import autostart
        report = autostart.last_result().report
        print(os.getpid())
        print(", ".join(report.applied + report.pending))
    """
    result = python(code, env)
    assert result.returncode == 0, result.stderr
    pid, waiting = result.stdout.splitlines()
    head = f"blackwell-compat: start-up (pid {pid}): "
    expected = [head + "no GPU, real or emulated: nothing to serve"]
    if waiting:  # patches that need no affected GPU (coqui_tts_fork) wait for their module
        expected.append(head + f"patches applied or waiting for their module: {waiting}")
    assert result.stderr.splitlines() == expected


def test_verbose_malformed_is_one_warning():
    env = clean_env(BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_VERBOSE="loud")
    result = run_broken(env)
    lines = warning_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "BLACKWELL_COMPAT_VERBOSE='loud' is not a boolean" in lines[0]


def test_an_affected_gpu_left_unserved_is_one_warning():
    env = clean_env(
        BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_EMULATE="sm_121", BLACKWELL_COMPAT_DISABLE="all"
    )
    result = python("import torch; print('program runs')", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "program runs"
    lines = warning_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "emulated sm_121 (CPU tensors) is not served" in lines[0]
    assert "fetch nvrtc" in lines[0] or "NVRTC remedy off" in lines[0]


# -- start() in this process ---------------------------------------------------------------


@pytest.fixture
def startup_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("BLACKWELL_COMPAT_", "_BLACKWELL_COMPAT_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_start_without_auto_applies_nothing(startup_env):
    result = autostart.start()
    assert result.auto is False
    assert result.report is None
    assert result.ok
    assert autostart.last_result() is result
    assert all(s.state != engine.APPLIED for s in engine.status())


def test_start_with_auto_and_everything_disabled_reports_every_patch_skipped(startup_env):
    startup_env.setenv("BLACKWELL_COMPAT_AUTO", "yes")
    startup_env.setenv("BLACKWELL_COMPAT_DISABLE", "all")
    result = autostart.start()
    assert result.auto is True
    assert result.report is not None
    assert set(result.report.skipped) == set(engine.known_names())
    assert result.ok


def test_start_problem_is_one_warning_then_quiet(startup_env):
    startup_env.setenv("BLACKWELL_COMPAT_AUTO", "1")
    startup_env.setenv("BLACKWELL_COMPAT_DISABLE", "no_such_patch")
    with pytest.warns(BlackwellCompatWarning, match="no_such_patch") as record:
        result = autostart.start()
    assert len(record) == 1
    assert not result.ok and result.report is None
    assert os.environ["_BLACKWELL_COMPAT_AUTOSTART_WARNED"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = autostart.start()  # same problem: already shown in this process tree
    assert again.problems == result.problems


def test_start_never_raises_even_with_warnings_as_errors(startup_env):
    startup_env.setenv("BLACKWELL_COMPAT_AUTO", "sometimes")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("error")
        result = autostart.start()  # would raise from warnings.warn; shows it instead
    assert not result.ok
    assert [w.category for w in shown] == [BlackwellCompatWarning]
    assert "BLACKWELL_COMPAT_AUTO='sometimes'" in str(shown[0].message)


def test_trigger_set_matches_the_hook_line():
    assert not autostart.trigger_set({})
    assert not autostart.trigger_set({"BLACKWELL_COMPAT_AUTO": "0"})
    assert not autostart.trigger_set({"BLACKWELL_COMPAT_AUTO": ""})
    assert autostart.trigger_set({"BLACKWELL_COMPAT_AUTO": "1"})
    assert autostart.trigger_set({"BLACKWELL_COMPAT_EMULATE": "sm_121"})
    assert autostart.trigger_set({"BLACKWELL_COMPAT_AUTO": "sometimes"})  # warns at start-up
    assert not autostart.trigger_set({"BLACKWELL_COMPAT_AUTO": " Off "})


def test_format_problems():
    one = autostart.format_problems(["a"])
    assert one.endswith("the program runs on: a")
    two = autostart.format_problems(["a", "b"])
    assert two.splitlines()[1:] == ["  - a", "  - b"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and PR_SET_PDEATHSIG")
def test_ctrl_c_during_start_up_ends_the_program_quietly(tmp_path):
    """Ctrl-C while the start-up hook's probe waits on a test process hanging in a broken
    NVRTC: before, "Fatal Python error: init_import_site" and a 54-line traceback, and the
    test process lived on.  Now the program ends as Python programs end on Ctrl-C (by SIGINT:
    status 130 in a shell), silently, and the test process goes with it."""
    import signal
    import time

    from support import native_fakes

    site_dir, library = native_fakes.nvrtc_site(tmp_path / "site", "CALL_HANG")
    # The activation waits for `import torch`, except where the environment holds something
    # only it can check (here a selection no process checked yet): then it runs at start-up.
    env = clean_env(
        BLACKWELL_COMPAT_AUTO="1",
        BLACKWELL_COMPAT_DISABLE="kokoro",
        BLACKWELL_COMPAT_CACHE_DIR=str(tmp_path / "cache"),
        BLACKWELL_COMPAT_PROBE_TIMEOUT="300",
        PYTHONPATH=str(site_dir),
    )
    program = subprocess.Popen(
        [sys.executable, "-c", "print('the program ran')"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def test_processes() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != program.pid:
                try:
                    if str(library) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                        found.append(int(entry.name))
                except OSError:
                    pass
        return found

    deadline = time.monotonic() + 120
    hanging: list[int] = []
    while time.monotonic() < deadline and not hanging:
        hanging = test_processes()
        time.sleep(0.1)
    assert hanging, "the start-up probe never started its test process"
    time.sleep(0.5)
    program.send_signal(signal.SIGINT)
    out, err = program.communicate(timeout=60)
    assert program.returncode == -signal.SIGINT, (program.returncode, err)
    assert "Fatal Python error" not in err and "Traceback" not in err, err
    assert err == "" and out == ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and test_processes():
        time.sleep(0.1)
    assert test_processes() == []
