"""``python -m blackwell_compat run``: environment, exit status, streams and signals."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from support.environ import clean_env

from blackwell_compat import startup_checks
from blackwell_compat.cli import run_cmd
from blackwell_compat.engine import known_names
from blackwell_compat.errors import ConfigError
from blackwell_compat.probing.locate import locate_torch

RUN = [sys.executable, "-m", "blackwell_compat", "run"]
POSIX = os.name == "posix"


def run(
    *args: str, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*RUN, *args],
        env=clean_env() if env is None else env,
        capture_output=True,
        timeout=300,
        **kwargs,
    )


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


# -- pass-through ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_exit_status_is_the_commands(code):
    result = run("--", *py(f"raise SystemExit({code})"))
    assert result.returncode == code
    assert result.stderr == b""


def test_stdout_and_stderr_pass_through_byte_for_byte():
    payload = bytes(range(256)) * 4
    code = f"""
        import sys
        sys.stdout.buffer.write({payload!r})
        sys.stderr.buffer.write(b"err\\xff\\n")
    """
    result = run("--", *py(code))
    assert result.returncode == 0
    assert result.stdout == payload
    assert result.stderr == b"err\xff\n"


def test_stdin_passes_through():
    data = b"line one\nline two\n\x00\xfe binary\n" * 1000
    result = run(
        "--", *py("import sys; sys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])"), input=data
    )
    assert result.returncode == 0
    assert result.stdout == data[::-1]


def test_a_failing_python_program_keeps_its_traceback_and_status():
    result = run("--", *py("raise ValueError('broken on purpose')"))
    assert result.returncode == 1
    assert b"ValueError: broken on purpose" in result.stderr
    assert b"Traceback" in result.stderr


@pytest.mark.skipif(not POSIX, reason="signals and exec exist on POSIX only")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT])
def test_death_by_signal_is_death_by_the_same_signal(signum):
    # run replaces itself with the command (exec): the waiting parent sees the signal itself
    code = "import os, signal\n"
    if signum != signal.SIGKILL:
        code += f"signal.signal({int(signum)}, signal.SIG_DFL)\n"
    code += f"os.kill(os.getpid(), {int(signum)})\n"
    result = run("--", *py(code))
    assert result.returncode == -signum


@pytest.mark.skipif(not POSIX, reason="exec exists on POSIX only")
def test_the_command_keeps_the_process_id():
    process = subprocess.Popen(
        [*RUN, "--", *py("import os; print(os.getpid())")],
        env=clean_env(),
        stdout=subprocess.PIPE,
    )
    out, _ = process.communicate(timeout=300)
    assert int(out) == process.pid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigpipe_is_not_left_ignored_for_the_command():
    # Python ignores SIGPIPE for itself; a shell pipeline in the command must not inherit that
    result = run("--", "sh", "-c", "grep SigIgn /proc/$$/status")
    assert result.returncode == 0
    mask = int(result.stdout.split()[1], 16)
    assert not mask & (1 << (signal.SIGPIPE - 1))


def test_shell_pipeline_under_run_behaves_as_without_it():
    result = run("--", "sh", "-c", "yes | head -n 2")
    assert result.returncode == 0
    assert result.stdout == b"y\ny\n"
    assert result.stderr == b""


def test_command_not_found_is_127():
    result = run("--", "blackwell-compat-no-such-command-xyz")
    assert result.returncode == 127
    assert b"command not found: blackwell-compat-no-such-command-xyz" in result.stderr


def test_command_not_executable_is_126(tmp_path):
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    result = run("--", str(script))
    assert result.returncode == 126
    assert b"cannot execute" in result.stderr


def test_without_dashes_the_command_still_runs():
    result = run(*py("print('ok')"))
    assert result.returncode == 0
    assert result.stdout == b"ok\n"


# -- what the command sees --------------------------------------------------------------------

SHOW_ENV = """
    import json, os, sys
    print(json.dumps({k: v for k, v in os.environ.items() if k.startswith("BLACKWELL_COMPAT_")}))
    print(json.dumps(sorted(m for m in sys.modules if m.startswith("blackwell_compat."))))
"""


def shown(result: subprocess.CompletedProcess[bytes]) -> tuple[dict[str, str], list[str]]:
    import json

    assert result.returncode == 0, result.stderr.decode()
    env_line, modules_line = result.stdout.decode().splitlines()
    return json.loads(env_line), json.loads(modules_line)


def test_the_command_gets_auto_and_the_hook_runs_before_it():
    env, modules = shown(run("--", *py(SHOW_ENV)))
    # AUTO is run's; NVRTC=off is the tests' own (support.environ.clean_env), passed through.
    assert env == {"BLACKWELL_COMPAT_AUTO": "1", "BLACKWELL_COMPAT_NVRTC": "off"}
    # The hook armed the activation for `import torch`, which this command never does.
    assert "blackwell_compat.startup_hook" in modules
    assert "blackwell_compat.engine" not in modules
    env, modules = shown(run("--", *py("import torch\n" + textwrap.dedent(SHOW_ENV))))
    assert "blackwell_compat.autostart" in modules
    assert "blackwell_compat.engine" in modules


def test_emulate_is_normalised_and_passed_on():
    env, _ = shown(run("--emulate", "12.1", "--", *py(SHOW_ENV)))
    assert env["BLACKWELL_COMPAT_EMULATE"] == "sm_121"
    assert env["BLACKWELL_COMPAT_AUTO"] == "1"


def test_patches_selects_by_disabling_every_other_patch():
    names = known_names()
    assert len(names) >= 2
    env, _ = shown(run("--patches", names[0], "--", *py(SHOW_ENV)))
    assert sorted(env["BLACKWELL_COMPAT_DISABLE"].split(",")) == sorted(names[1:])


def test_exclude_adds_to_an_inherited_disable():
    names = known_names()
    parent = clean_env(BLACKWELL_COMPAT_DISABLE=names[0])
    env, _ = shown(run("--exclude", names[1], "--", *py(SHOW_ENV), env=parent))
    assert sorted(env["BLACKWELL_COMPAT_DISABLE"].split(",")) == sorted(names[:2])


def test_force_is_passed_on():
    env, _ = shown(run("--force", "--", *py(SHOW_ENV)))
    assert env["BLACKWELL_COMPAT_FORCE"] == "1"


def test_a_stale_warning_marker_is_not_passed_on():
    # a new run is a new process tree: its start-up warnings must be shown again
    parent = clean_env(_BLACKWELL_COMPAT_AUTOSTART_WARNED="deadbeef")
    code = "import os; print(os.environ.get('_BLACKWELL_COMPAT_AUTOSTART_WARNED'))"
    result = run("--", *py(code), env=parent)
    assert result.returncode == 0
    assert b"deadbeef" not in result.stdout


# -- bad input: a clear error, exit 2, nothing run -------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--emulate", "sm_x"], b"'sm_x' is not a GPU architecture"),
        (["--patches", "no_such_patch"], b"unknown patch name(s) 'no_such_patch'"),
        (["--exclude", "no_such_patch"], b"unknown patch name(s) 'no_such_patch'"),
        (["--patches", ","], b"no patch name given"),
        (["--strategy", "nonsense"], b"use PATCH=STRATEGY"),
        (["--strategy", "no_such_patch=cpu"], b"unknown patch name(s) 'no_such_patch'"),
    ],
)
def test_bad_options_are_usage_errors_and_run_nothing(tmp_path, args, message):
    marker = tmp_path / "ran"
    result = run(*args, "--", *py(f"open({str(marker)!r}, 'w').close()"))
    assert result.returncode == 2
    assert message in result.stderr
    assert b"Traceback" not in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("BLACKWELL_COMPAT_DISABLE", "no_such_patch", b"'no_such_patch'"),
        ("BLACKWELL_COMPAT_FORCE", "perhaps", b"'perhaps' is not a boolean"),
        ("BLACKWELL_COMPAT_STRATEGY", "nonsense", b"'nonsense' is malformed"),
    ],
)
def test_bad_inherited_variables_are_usage_errors(variable, value, message):
    result = run("--", *py("print('ran')"), env=clean_env(**{variable: value}))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == b""


def test_bad_inherited_emulate_is_rejected():
    # (importing the package with this value set already fails; build_environment checks too)
    with pytest.raises(ConfigError, match="sm_x"):
        run_cmd.build_environment(clean_env(BLACKWELL_COMPAT_EMULATE="sm_x"))


def test_no_command_is_a_usage_error():
    result = run()
    assert result.returncode == 2
    assert b"no command given" in result.stderr
    result = run("--")
    assert result.returncode == 2


def test_unknown_strategy_of_a_known_patch_is_rejected():
    from blackwell_compat.engine import registrations

    with_strategies = [r for r in registrations() if r.patch is not None and r.patch.strategies]
    if not with_strategies:
        pytest.fail("no registered patch offers strategies; this test needs one")
    name = with_strategies[0].name
    with pytest.raises(ConfigError, match="has no strategy 'no_such_strategy'"):
        run_cmd.build_environment(clean_env(), strategies=[f"{name}=no_such_strategy"])
    env = run_cmd.build_environment(
        clean_env(), strategies=[f"{name}={with_strategies[0].patch.strategies[-1]}"]
    )
    assert env["BLACKWELL_COMPAT_STRATEGY"] == f"{name}={with_strategies[0].patch.strategies[-1]}"


def test_build_environment_keeps_everything_else():
    base = clean_env(SOME_USER_VARIABLE="kept", BLACKWELL_COMPAT_DISABLE="all")
    env = run_cmd.build_environment(base, patches=known_names()[0])
    assert env["SOME_USER_VARIABLE"] == "kept"
    assert env["BLACKWELL_COMPAT_DISABLE"] == "all"  # the user's 'all' still wins
    assert env["BLACKWELL_COMPAT_AUTO"] == "1"
    assert base.get("BLACKWELL_COMPAT_AUTO") is None  # the input is not modified


# -- what it says -------------------------------------------------------------------------------

MAJOR = locate_torch().cuda_major
CAPABLE = {12: "12.9.86", 13: "13.0.88"}


def test_it_says_which_rung_serves_each_affected_gpu():
    # The tests run with BLACKWELL_COMPAT_NVRTC=off (support.environ): the patches serve.
    result = run("--emulate", "sm_121", "--", *py("print('command ran')"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"command ran\n"
    (line,) = result.stderr.decode().splitlines()
    head = "blackwell-compat: run: emulated sm_121 (CPU tensors): patches ("
    assert line.startswith(head), line
    assert "torch" in line[len(head) :].split(")")[0].split(", ")
    assert "because NVRTC remedy off: BLACKWELL_COMPAT_NVRTC=off" in line


def test_it_is_silent_without_an_affected_gpu_and_with_quiet():
    assert run("--", *py("pass")).stderr == b""
    quiet = run("--quiet", "--emulate", "sm_121", "--", *py("print('ran')"))
    assert quiet.returncode == 0 and quiet.stdout == b"ran\n"
    assert quiet.stderr == b""


@pytest.mark.skipif(MAJOR not in CAPABLE, reason="needs a CUDA 12 or 13 build of torch")
@pytest.mark.slow
def test_it_names_the_cached_nvrtc_that_will_serve(nvrtc_libraries, tmp_path):
    from support.nvrtc_cache import fill_cache

    version = CAPABLE[MAJOR]  # type: ignore[index]
    library = fill_cache(tmp_path, nvrtc_libraries[version], version, MAJOR)  # type: ignore[arg-type]
    env = clean_env(BLACKWELL_COMPAT_CACHE_DIR=str(tmp_path))
    del env["BLACKWELL_COMPAT_NVRTC"]
    code = """
        import torch, blackwell_compat as bc
        (service,) = bc.ladder()
        print(service.rung, service.source)
        print(torch.tensor([3 + 4j]).abs().tolist())
    """
    result = run("--emulate", "sm_121", "--", *py(code), env=env)
    assert result.returncode == 0, result.stderr
    short = version[: version.rindex(".")]
    assert result.stderr.decode().splitlines() == [
        f"blackwell-compat: run: emulated sm_121 (CPU tensors): NVRTC remedy, NVRTC {short} at "
        f"{library} (the project's cache): loaded by every Python process of the command when "
        "it imports torch; nothing is patched"
    ]
    assert result.stdout.decode().splitlines() == [
        f"nvrtc-remedy NVRTC {short} at {library} (the project's cache)",
        "[5.0]",
    ]


def test_build_environment_marks_the_selection_as_checked():
    env = run_cmd.build_environment(clean_env(), exclude="torch")
    assert env["_BLACKWELL_COMPAT_SELECTION_CHECKED"] == "torch\x1f"
    assert not startup_checks.must_check_now(env)


# -- the child-process path used on Windows ----------------------------------------------------


def test_spawn_and_wait_returns_the_exit_code():
    assert run_cmd.spawn_and_wait(py("raise SystemExit(7)"), clean_env()) == 7


@pytest.mark.skipif(not POSIX, reason="signals exist on POSIX only")
def test_spawn_and_wait_maps_a_signal_to_the_shell_convention():
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    assert run_cmd.spawn_and_wait(py(code), clean_env()) == 128 + signal.SIGTERM


def test_spawn_and_wait_reports_a_missing_command(capsys):
    assert run_cmd.spawn_and_wait(["blackwell-compat-no-such-command-xyz"], clean_env()) == 127
    assert "command not found" in capsys.readouterr().err


def test_parser_accepts_the_documented_forms():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command_name")
    run_cmd.add_parser(sub)
    args = parser.parse_args(["run", "--emulate", "sm_121", "--", "python", "-c", "pass"])
    assert run_cmd._command(args) == ["python", "-c", "pass"]
    args = parser.parse_args(["run", "--patches", "torch", "python", "--patches", "x"])
    assert args.patches == "torch"
    assert run_cmd._command(args) == ["python", "--patches", "x"]


# -- the start-up hook must be installed --------------------------------------------------------


def test_run_refuses_when_the_start_up_hook_is_not_installed(monkeypatch, tmp_path, capsys):
    from blackwell_compat import autostart

    monkeypatch.setattr(autostart, "site_directories", lambda: [tmp_path])
    parser = argparse.ArgumentParser()
    run_cmd.add_parser(parser.add_subparsers(dest="command_name"))
    args = parser.parse_args(["run", "--", sys.executable, "-c", "pass"])
    assert run_cmd.run(args) == 2
    err = capsys.readouterr().err
    assert autostart.HOOK_FILENAME in err and str(tmp_path) in err
    (tmp_path / autostart.HOOK_FILENAME).write_text("# hook\n")
    assert autostart.installed_hooks() == [tmp_path / autostart.HOOK_FILENAME]


def test_an_empty_command_name_is_a_usage_error():
    """Issue 14, point 5: `run -- ""` ended in a ValueError traceback with exit status 1."""
    result = run("--", "")
    assert result.returncode == 2
    assert b"the command name is empty" in result.stderr
    assert b"usage: python -m blackwell_compat run" in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_nul_in_the_command_name_is_a_usage_error(capsys):
    # (a NUL cannot cross a real command line; the in-process call is where it could come from)
    args = argparse.Namespace(
        command=["--", "py\0thon"],
        patches=None,
        exclude=None,
        emulate=None,
        force=False,
        strategy=[],
    )
    assert run_cmd.run(args) == 2
    assert "contains a NUL character" in capsys.readouterr().err


def test_a_nul_byte_in_an_argument_cannot_be_executed(monkeypatch, capsys):
    monkeypatch.setattr(run_cmd, "_restore_default_signals", lambda: None)
    assert run_cmd.exec_command(["true", "a\0b"], clean_env()) == run_cmd.EXIT_NOT_EXECUTABLE
    assert "cannot execute true" in capsys.readouterr().err


def test_a_strategy_option_given_twice_is_refused():
    with pytest.raises(ConfigError, match="given twice"):
        run_cmd.build_environment(clean_env(), strategies=["torchaudio=cpu", "torchaudio=real"])


def test_usage_errors_name_the_command_the_user_typed():
    """Started as the console script, the usage line says ``blackwell-compat run``."""
    code = (
        "import sys\n"
        "sys.argv[0] = '/usr/local/bin/blackwell-compat'\n"
        "from blackwell_compat.cli import main\n"
        "sys.exit(main(['run', '--', '']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "usage: blackwell-compat run [options] -- COMMAND" in done.stderr
    assert "python -m blackwell_compat" not in done.stderr


# -- issue 21: relative paths are made absolute once, here, and refused elsewhere ----------------


def test_run_makes_the_library_path_variables_absolute_once(tmp_path):
    (tmp_path / "ptxas-dir").mkdir()
    code = (
        "import json, os; print(json.dumps({k: os.environ.get(k) for k in "
        "('BLACKWELL_COMPAT_CACHE_DIR', 'BLACKWELL_COMPAT_PTXAS', 'BLACKWELL_COMPAT_NVRTC')}))"
    )
    env = clean_env(
        BLACKWELL_COMPAT_CACHE_DIR="rel-cache",
        BLACKWELL_COMPAT_PTXAS="ptxas-dir",
        BLACKWELL_COMPAT_NVRTC="off",
    )
    done = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "run", "--", sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    seen = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "BLACKWELL_COMPAT_CACHE_DIR": str(tmp_path / "rel-cache"),
        "BLACKWELL_COMPAT_PTXAS": str(tmp_path / "ptxas-dir"),
        "BLACKWELL_COMPAT_NVRTC": "off",
    }


def test_other_commands_refuse_a_relative_path_variable(tmp_path):
    env = clean_env(BLACKWELL_COMPAT_CACHE_DIR="rel-cache")
    done = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "BLACKWELL_COMPAT_CACHE_DIR='rel-cache' is a relative path" in done.stderr
    assert not (tmp_path / "rel-cache").exists()


def test_prepare_environment_changes_only_relative_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {
        "BLACKWELL_COMPAT_CACHE_DIR": "/abs/cache",
        "BLACKWELL_COMPAT_NVRTC": "lib",
        "BLACKWELL_COMPAT_PTXAS": "",
    }
    assert run_cmd.prepare_environment(env) == ["BLACKWELL_COMPAT_NVRTC"]
    assert env["BLACKWELL_COMPAT_NVRTC"] == str(tmp_path / "lib")
    assert env["BLACKWELL_COMPAT_CACHE_DIR"] == "/abs/cache" and env["BLACKWELL_COMPAT_PTXAS"] == ""
