"""The doctor's probes in child Python processes: how they report, and what they reported.

Risky probes (importing torch, touching CUDA, the ``--smoke`` workloads) never run in the
doctor's own process: a crash, a hang or a driver that never answers must become a result,
not a hung or dead doctor.  They are started by the package's one child-process runner
(:func:`blackwell_compat.children.run`: time limit, process-group kill, death with the doctor,
private working directory); this module adds the doctor's protocol on top: the child prints
one JSON record per line after :data:`MARKER`, anything else it prints (warnings, a library's
chatter) is kept only as a tail for errors.
"""

from __future__ import annotations

import json
import os
import site
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import children
from ..children import describe_exit

__all__ = [
    "MARKER",
    "ChildResult",
    "Timeouts",
    "child_env",
    "describe_exit",
    "emit",
    "module_argv",
    "package_root",
    "run_child",
]

MARKER = "@@blackwell-compat-doctor@@ "
_TAIL = 2000


@dataclass(frozen=True)
class ChildResult:
    """What one child process did."""

    argv: tuple[str, ...]
    returncode: int | None
    timed_out: bool
    seconds: float
    records: tuple[dict[str, Any], ...] = ()
    stdout_tail: str = ""
    stderr_tail: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def record(self, section: str) -> dict[str, Any] | None:
        """The last record the child emitted for *section*, if any."""
        for rec in reversed(self.records):
            if rec.get("section") == section:
                found: dict[str, Any] = rec
                return found
        return None


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed to each kind of child (``--timeout`` scales them)."""

    facts: float = 120.0
    smoke: float = 240.0
    tool: float = 30.0


def emit(record: Mapping[str, Any]) -> None:
    """Child side: print one record for the parent and flush at once (a later crash keeps it)."""
    sys.stdout.write(MARKER + json.dumps(dict(record), default=str) + "\n")
    sys.stdout.flush()


def package_root() -> str:
    """The folder that holds the ``blackwell_compat`` package (for the child's ``sys.path``)."""
    return str(Path(__file__).resolve().parent.parent.parent)


def module_argv(module: str, *args: str) -> list[str]:
    """Arguments that run *module* as ``__main__`` in an isolated interpreter (``-I``) that
    imports what the user's programs import.

    ``-I`` keeps the working directory off ``sys.path`` and ignores ``PYTHON*`` variables, so
    the code puts back what a plain ``python`` started with the child's environment would
    have: the absolute ``PYTHONPATH`` entries first (relative ones name the working directory
    and are left out), the user site before the other site folders where this interpreter
    uses one.  The package root is appended only when missing, so an installed copy is used
    exactly as the user's interpreter would use it.
    """
    root = package_root()
    code = (
        "import os, runpy, site, sys\n"
        "extra = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep)"
        " if os.path.isabs(p)]\n"
        "sys.path[0:0] = [p for p in extra if p not in sys.path]\n"
        f"if {bool(site.ENABLE_USER_SITE)!r} and not os.environ.get('PYTHONNOUSERSITE'):\n"
        "    before = list(sys.path)\n"
        "    site.addsitedir(site.getusersitepackages())\n"
        "    added = [p for p in sys.path if p not in before]\n"
        "    rest = [p for p in sys.path if p not in added]\n"
        "    at = next((i for i, p in enumerate(rest) if p.endswith(('site-packages',"
        " 'dist-packages'))), len(rest))\n"
        "    sys.path[:] = rest[:at] + added + rest[at:]\n"
        f"root = {root!r}\n"
        "if root not in sys.path:\n"
        "    sys.path.append(root)\n"
        f"sys.argv[0] = {module!r}\n"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    )
    return ["-I", "-c", children.guarded_code(code), *args]


def _parse(stdout: str) -> tuple[tuple[dict[str, Any], ...], str]:
    records: list[dict[str, Any]] = []
    other: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            try:
                value = json.loads(line[len(MARKER) :])
            except ValueError:
                other.append(line)
                continue
            if isinstance(value, dict):
                records.append(value)
        else:
            other.append(line)
    return tuple(records), "\n".join(other)[-_TAIL:]


def run_child(
    args: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    python: str | None = None,
    cwd: str | None = None,
) -> ChildResult:
    """Run ``python *args`` (:func:`blackwell_compat.children.run`) and read its records.

    Never raises for what the child does: a failure to start, a non-zero exit, a signal or a
    timeout is described in :attr:`ChildResult.error`.  The child runs in a fresh private
    folder unless *cwd* (absolute) is given, dies with the doctor and, on timeout, is killed
    with its whole process group.
    """
    argv = (python or sys.executable, *args)
    code = args[list(args).index("-c") + 1] if "-c" in args[:-1] else ""
    guarded = code.startswith(children.DIE_WITH_PARENT)  # module_argv's children are
    outcome = children.run(argv, timeout=timeout, env=env, cwd=cwd, guarded=guarded)
    records, stdout_rest = _parse(outcome.stdout_text)
    error = outcome.failure()
    if error is not None and outcome.started and not outcome.timed_out:
        last = _last_line(outcome.stderr_tail) or _last_line(stdout_rest)
        if last:
            error += f": {last}"
    return ChildResult(
        argv=argv,
        returncode=outcome.returncode,
        timed_out=outcome.timed_out,
        seconds=outcome.seconds,
        records=records,
        stdout_tail=stdout_rest,
        stderr_tail=outcome.stderr_tail,
        error=error,
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def child_env(
    base: Mapping[str, str] | None = None,
    *,
    drop: Sequence[str] = (),
    set_: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A copy of the environment with some variables removed and some set."""
    env = dict(os.environ if base is None else base)
    for name in drop:
        env.pop(name, None)
    env.update(set_ or {})
    return env
