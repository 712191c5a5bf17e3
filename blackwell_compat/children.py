"""The one way blackwell-compat starts a child process.

Every program the library runs for itself (its test interpreters, ``pip`` for ``fetch``,
``ptxas``, ``ldconfig``, the doctor's probes) goes through :func:`run`, so each one gets the
same guarantees:

- **a time limit**: past it the child's whole process group (it runs in a session of its
  own) is killed with ``SIGKILL``, grandchildren holding the pipes included;
- **death with its parent**: on Linux the kernel kills the child when the thread that started
  it ends, however it ends (``PR_SET_PDEATHSIG``, set in the child between ``fork`` and
  ``exec``, followed by a ``getppid()`` check for a parent that died in between); an exception
  while waiting (``KeyboardInterrupt`` from Ctrl-C included) kills the group before it goes on;
- **an explicit, safe working directory**: a fresh private folder, removed afterwards (the file
  system root where no temporary folder can be made), never the caller's;
- **nothing to read**: standard input is ``/dev/null``;
- **an outcome, never an exception**: :class:`Outcome` says whether it could be started, timed
  out, died of a signal or exited with a status, with the tail of its standard error.

Interpreters are started with ``-I`` (:func:`python_argv`): neither the working directory, nor
``PYTHON*`` variables, nor the user site decide what they import.  A leaf above ``config``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from . import config

__all__ = [
    "ACTIVATING_VARIABLES",
    "Outcome",
    "describe_exit",
    "helper_env",
    "python_argv",
    "run",
    "safe_workdir",
]

#: Variables that make an interpreter activate the library at start-up (the start-up hook,
#: the emulation, an audit): a helper process must never inherit them, or a probe started from
#: ``apply()`` would start ``apply()`` again in its child, and so on without end.
ACTIVATING_VARIABLES = (config.AUTO, config.EMULATE, "_BLACKWELL_COMPAT_AUDIT")

_TAIL = 2000
_PR_SET_PDEATHSIG = 1
#: The status a child exits with when its parent was already gone before it could start.
EXIT_PARENT_GONE = 125
_KILL_WAIT = 10.0


@dataclass(frozen=True)
class Outcome:
    """What one child process did."""

    argv: tuple[str, ...]
    timeout: float
    returncode: int | None = None
    """The exit status (negative: the signal that killed it); ``None`` when it timed out or
    never started."""
    timed_out: bool = False
    seconds: float = 0.0
    stdout: bytes = b""
    stderr: bytes = b""
    start_error: str | None = None
    """Why it could not be started (``None``: it ran)."""

    @property
    def started(self) -> bool:
        return self.start_error is None

    @property
    def ok(self) -> bool:
        """Started, finished in time and exited with status 0."""
        return self.started and not self.timed_out and self.returncode == 0

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_tail(self) -> str:
        """The last 2000 characters of its standard error."""
        return self.stderr.decode("utf-8", "replace")[-_TAIL:]

    def last_line(self) -> str:
        """The last non-empty line of its standard error (else of its standard output)."""
        for text in (self.stderr_tail, self.stdout_text[-_TAIL:]):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1]
        return ""

    def failure(self) -> str | None:
        """``None`` when it exited 0, else what happened, in words: ``could not be started
        (...)``, ``timed out after 20 s (killed; it hung or was too slow)``, ``killed by signal
        11 (SIGSEGV)``, ``exited with status 3``."""
        if self.start_error is not None:
            return f"could not be started ({self.start_error})"
        if self.timed_out:
            return f"timed out after {self.timeout:g} s (killed; it hung or was too slow)"
        if self.returncode == 0:
            return None
        return describe_exit(self.returncode if self.returncode is not None else -1)


def describe_exit(returncode: int) -> str:
    """``-11`` -> ``killed by signal 11 (SIGSEGV)``; ``3`` -> ``exited with status 3``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-returncode} ({name})"
    return f"exited with status {returncode}"


def python_argv(*args: str, python: str | None = None) -> list[str]:
    """``[python, "-I", *args]``: an isolated interpreter (no working directory, no
    ``PYTHON*`` variables, no user site on ``sys.path``); *python* defaults to this one."""
    return [python or sys.executable, "-I", *args]


def helper_env(
    base: Mapping[str, str] | None = None,
    *,
    drop: Sequence[str] = (),
    set_: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a helper process: *base* (default: this process's) without the
    variables that activate the library at start-up and without *drop*, with *set_*, marked as
    the library's own helper (``audit`` does not count it as the program's)."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if k not in ACTIVATING_VARIABLES and k not in drop
    }
    env.update(set_ or {})
    env[config.HELPER_MARK] = "1"
    return env


@contextmanager
def safe_workdir() -> Iterator[str]:
    """A fresh folder only this user can enter (``mkdtemp``, mode 0700), removed afterwards; the
    file-system root where no temporary folder can be made."""
    try:
        folder: str | None = tempfile.mkdtemp(prefix="bc-child-")
    except (OSError, RuntimeError):
        folder = None
    try:
        yield folder or os.path.abspath(os.sep)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (Linux), looked up in the parent: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return function


_PRCTL = _prctl()


def _die_with(parent: int) -> Callable[[], None] | None:
    """What the child runs between ``fork`` and ``exec``: ask the kernel for ``SIGKILL`` when
    the parent's thread ends, then make sure the parent did not end already."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(EXIT_PARENT_GONE)

    return in_child


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except OSError:
        pass


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    input: bytes | None = None,
) -> Outcome:
    """Run *argv* and wait at most *timeout* seconds; never raises for what the child does.

    *env*: the child's whole environment (default: this process's; :func:`helper_env` for the
    library's own helpers).  *cwd*: an absolute folder the caller made (default: a fresh
    private one, see :func:`safe_workdir`).  *input*: bytes for its standard input (default:
    none, ``/dev/null``).  An exception while waiting (``KeyboardInterrupt``) kills the child's
    group and propagates.
    """
    command = tuple(str(a) for a in argv)
    if cwd is not None and not os.path.isabs(cwd):
        raise ValueError(f"children.run: cwd must be an absolute path, got {cwd!r}")
    if cwd is None:
        with safe_workdir() as folder:
            return _run(command, timeout, env, folder, input)
    return _run(command, timeout, env, cwd, input)


def _run(
    argv: tuple[str, ...],
    timeout: float,
    env: Mapping[str, str] | None,
    cwd: str,
    data: bytes | None,
) -> Outcome:
    started = time.monotonic()
    posix = os.name == "posix"
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=posix,
            preexec_fn=_die_with(os.getpid()) if posix else None,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        shown = argv[0] if argv else "(no program)"
        return Outcome(argv, timeout, start_error=f"{shown}: {type(exc).__name__}: {exc}")
    timed_out = False
    try:
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            try:
                out, err = proc.communicate(timeout=_KILL_WAIT)
            except subprocess.TimeoutExpired:  # pragma: no cover - survives SIGKILL
                out, err = b"", b""
    except BaseException:
        _kill_group(proc)  # Ctrl-C or any error while waiting: the child never outlives it
        try:
            proc.wait(timeout=_KILL_WAIT)
        except subprocess.TimeoutExpired:  # pragma: no cover - survives SIGKILL
            pass
        raise
    if posix and not timed_out:
        _kill_group(proc)  # grandchildren it left behind in its group go with it
    return Outcome(
        argv,
        timeout,
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        seconds=time.monotonic() - started,
        stdout=out or b"",
        stderr=err or b"",
    )
