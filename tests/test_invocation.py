"""``invocation.running_the_cli``: the one answer to "is this process the command line?"."""

from __future__ import annotations

import subprocess
import sys

import pytest

from blackwell_compat import invocation


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/usr/bin/python3", "-m", "blackwell_compat", "list"], True),
        (["python", "-X", "importtime", "-m", "blackwell_compat"], True),
        (["/venv/bin/blackwell-compat", "doctor"], True),
        (["/usr/bin/python3", "/venv/bin/blackwell-compat", "doctor"], True),
        (["python", "-m", "pytest", "blackwell_compat"], False),
        (["python", "-m"], False),
        (["python", "train.py", "--out", "blackwell-compat"], False),
        ([], False),
    ],
)
def test_running_the_cli(argv, expected):
    assert invocation.running_the_cli(argv) is expected


def test_this_interpreter_is_not_the_cli_and_a_cli_child_is():
    assert invocation.running_the_cli() is False
    code = "from blackwell_compat.invocation import running_the_cli; print(running_the_cli())"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert plain.stdout.strip() == "False"


def test_the_package_root_no_longer_keeps_the_environment_error():
    import blackwell_compat

    assert not hasattr(blackwell_compat, "_environment_error")
    assert not hasattr(blackwell_compat, "_running_the_cli")
