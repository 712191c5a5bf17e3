"""Run a probe in a child Python process with a timeout, and read back what it reports.

Risky probes (importing torch, touching CUDA, the ``--smoke`` workloads) never run in the
doctor's own process: a crash, a hang or a driver that never answers must become a result,
not a hung or dead doctor.  The child prints one JSON record per line after :data:`MARKER`;
anything else it prints (warnings, a library's chatter) is kept only as a tail for errors.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """Arguments that run *module* as ``__main__`` with this package importable.

    The package root is appended to ``sys.path`` only when missing, so an installed copy is
    used exactly as the user's interpreter would use it.  The working directory never joins
    ``sys.path``: ``-P`` where Python has it (3.11+), and the code drops the ``''`` entry
    ``-c`` puts first otherwise (:func:`run_child` also starts children in an empty folder).
    """
    root = package_root()
    code = (
        "import runpy, sys\n"
        "if sys.path and sys.path[0] == '':\n"
        "    del sys.path[0]\n"
        f"root = {root!r}\n"
        "if root not in sys.path:\n"
        "    sys.path.append(root)\n"
        f"sys.argv[0] = {module!r}\n"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    )
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    return [*safe, "-c", code, *args]


def _tail(data: bytes | str | None) -> str:
    if not data:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text[-_TAIL:]


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


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError, OSError):
        pass


def describe_exit(returncode: int) -> str:
    """``-11`` -> ``killed by signal 11 (SIGSEGV)``; ``3`` -> ``exited with status 3``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-returncode} ({name})"
    return f"exited with status {returncode}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_child(
    args: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    python: str | None = None,
    cwd: str | None = None,
) -> ChildResult:
    """Run ``python *args`` and wait at most *timeout* seconds.

    Never raises for what the child does: a failure to start, a non-zero exit, a signal or a
    timeout is described in :attr:`ChildResult.error`.  On timeout the child's whole process
    group is killed (POSIX), so grandchildren holding the pipes cannot hang the doctor.
    Without *cwd* the child starts in a fresh empty folder, so nothing in the caller's working
    directory (a planted ``nvidia/cu13/lib/libnvrtc.so.13``) can be picked up relative to it.
    """
    argv = (python or sys.executable, *args)
    started = time.monotonic()
    scratch = None
    if cwd is None:
        try:
            scratch = tempfile.mkdtemp(prefix="bc-doctor-child-")
        except (OSError, RuntimeError):  # no writable temporary folder: the file-system root
            cwd = os.path.abspath(os.sep)
    try:
        return _run(argv, started, timeout, env, cwd or scratch)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _run(
    argv: tuple[str, ...],
    started: float,
    timeout: float,
    env: Mapping[str, str] | None,
    cwd: str | None,
) -> ChildResult:
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=os.name == "posix",
        )
    except OSError as exc:
        return ChildResult(
            argv=argv,
            returncode=None,
            timed_out=False,
            seconds=0.0,
            error=f"could not start {argv[0]}: {type(exc).__name__}: {exc}",
        )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
            out, err = b"", b""
    seconds = time.monotonic() - started
    records, stdout_rest = _parse(out.decode("utf-8", "replace") if out else "")
    stderr_tail = _tail(err)
    error: str | None = None
    if timed_out:
        error = f"timed out after {timeout:g} s (killed; it hung or was too slow)"
    elif proc.returncode != 0:
        error = describe_exit(proc.returncode)
        last = _last_line(stderr_tail) or _last_line(stdout_rest)
        if last:
            error += f": {last}"
    return ChildResult(
        argv=argv,
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        seconds=seconds,
        records=records,
        stdout_tail=stdout_rest,
        stderr_tail=stderr_tail,
        error=error,
    )


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
