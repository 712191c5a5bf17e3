"""The command line's shared rules: usage errors (exit 2, said once) and a closed stdout."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support.environ import clean_env

CLI = [sys.executable, "-m", "blackwell_compat"]


def cli(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=clean_env(**variables), capture_output=True, text=True, timeout=300
    )


BAD_VARIABLES = [
    ({"BLACKWELL_COMPAT_DISABLE": "nope"}, "unknown patch name(s) 'nope'"),
    ({"BLACKWELL_COMPAT_DISABLE": "all,nope"}, "'all' disables every patch"),
    ({"BLACKWELL_COMPAT_STRATEGY": "torchaudio"}, "'torchaudio' is malformed"),
    ({"BLACKWELL_COMPAT_STRATEGY": "torchaudio=cpu,torchaudio=real"}, "is given twice"),
    ({"BLACKWELL_COMPAT_STRATEGY": "torchaudio=gpu"}, "has no strategy 'gpu'"),
    ({"BLACKWELL_COMPAT_EMULATE": "sm_999"}, "compute capability 99.9"),
    ({"BLACKWELL_COMPAT_EMULATE": "gb10"}, "'gb10' is not a GPU architecture"),
    ({"BLACKWELL_COMPAT_FORCE": "maybe"}, "is not a boolean"),
]


@pytest.mark.parametrize(("variables", "needle"), BAD_VARIABLES)
@pytest.mark.parametrize("command", [("list",), ("list", "--json")])
def test_list_refuses_a_malformed_variable_once_with_exit_2(command, variables, needle):
    done = cli(*command, **variables)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count(needle) == 1, done.stderr
    assert done.stderr.startswith("blackwell-compat: error: ")
    assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("variables", "needle"), BAD_VARIABLES[::2])
@pytest.mark.parametrize("command", [("doctor", "--json"), ("audit", "--", "x.py")])
def test_every_command_follows_the_same_rule(command, variables, needle):
    done = cli(*command, **variables)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count(needle) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_malformed_emulate_under_auto_is_said_once():
    """The start-up hook runs first (AUTO=1); the command line alone reports the problem."""
    done = cli("list", BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_EMULATE="sm_twelve")
    assert done.returncode == 2
    assert done.stderr.count("'sm_twelve'") == 1, done.stderr


def test_several_problems_are_each_said_once():
    done = cli("list", BLACKWELL_COMPAT_DISABLE="nope", BLACKWELL_COMPAT_STRATEGY="x")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 2, lines
    assert all(line.startswith("blackwell-compat: error: ") for line in lines)


@pytest.mark.skipif(os.name != "posix", reason="a POSIX pipe with its reader gone")
@pytest.mark.parametrize("args", [("list", "--json"), ("list",)])
def test_a_reader_that_left_ends_the_output_without_a_traceback(args):
    """`list --json | head`: writing to a pipe nobody reads is a quiet end, not a traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte
    try:
        done = subprocess.run(
            [*CLI, *args],
            env=clean_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr, done.stderr
    assert "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode in (0, 1)
