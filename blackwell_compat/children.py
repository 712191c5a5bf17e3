"""The one way blackwell-compat starts a child process.

Every program the library runs for itself (its test interpreters, ``pip`` for ``fetch``,
``ptxas``, ``ldconfig``, the doctor's probes) goes through :func:`run`, so each one gets the
same guarantees:

- **a time limit**: past it the child's whole process group (it runs in a session of its
  own) is killed with ``SIGKILL``, grandchildren holding the pipes included;
- **death with its parent**: on Linux the kernel kills the child when the thread that started
  it ends, however it ends (``PR_SET_PDEATHSIG``, asked for by the child itself before it does
  anything else, followed by a ``getppid()`` check for a parent that died in between: the
  library's Python children begin with :data:`DIE_WITH_PARENT`, other programs are started
  through a small launcher that asks, then becomes the program); an exception while waiting
  (``KeyboardInterrupt`` from Ctrl-C included) kills the group before it goes on.  Nothing runs
  between ``fork`` and ``exec`` (no ``preexec_fn``: it is unsafe with threads and would run
  every ``os.register_at_fork`` hook of the process);
- **an explicit, safe working directory**: a fresh private folder, removed afterwards (the file
  system root where no temporary folder can be made), never the caller's;
- **nothing to read**: standard input is ``/dev/null``;
- **an outcome, never an exception**: :class:`Outcome` says whether it could be started, timed
  out, died of a signal or exited with a status, with the tail of its standard error.

Interpreters are started with ``-I`` (:func:`python_argv`): neither the working directory, nor
``PYTHON*`` variables, nor the user site decide what they import.  A leaf above ``config``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from . import config

__all__ = [
    "ACTIVATING_VARIABLES",
    "DIE_WITH_PARENT",
    "EXIT_PARENT_GONE",
    "PARENT_VARIABLE",
    "Outcome",
    "describe_exit",
    "guarded_code",
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


#: Python code that makes the interpreter running it die with its parent: it asks the kernel
#: for ``SIGKILL`` when the thread that started it ends (``PR_SET_PDEATHSIG``, Linux), then
#: checks that this parent, named in :data:`PARENT_VARIABLE`, is still the one (it may have
#: died before the request was made).  Every child starts with it: the library's own Python
#: children as the first lines of their code (:func:`guarded_code`), every other program
#: through :data:`_LAUNCHER`, which then replaces itself with the program.
DIE_WITH_PARENT = (
    "import os as _bc_os, sys as _bc_sys\n"
    "if _bc_sys.platform.startswith('linux'):\n"
    "    try:\n"
    "        import ctypes as _bc_ctypes\n"
    "        _bc_ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)\n"  # PR_SET_PDEATHSIG, SIGKILL
    "    except Exception:\n"
    "        pass\n"
    f"_bc_parent = _bc_os.environ.pop({'_BLACKWELL_COMPAT_PARENT'!r}, '')\n"
    "if _bc_parent and _bc_parent != str(_bc_os.getppid()):\n"
    f"    _bc_os._exit({EXIT_PARENT_GONE})\n"
)
PARENT_VARIABLE = "_BLACKWELL_COMPAT_PARENT"
_LAUNCHER = DIE_WITH_PARENT + "_bc_os.execv(_bc_sys.argv[1], _bc_sys.argv[1:])\n"


def guarded_code(code: str) -> str:
    """*code* for ``python -c``, made to die with the program that starts it (see
    :data:`DIE_WITH_PARENT`); pass the result to :func:`run` with ``guarded=True``."""
    return DIE_WITH_PARENT + code


def _launched(argv: tuple[str, ...]) -> list[str]:
    """*argv* started through the launcher: an isolated interpreter that arranges its death
    with the parent, then becomes *argv[0]* (``execv``: same process, same pid)."""
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, os.path.abspath(argv[0]), *argv[1:]]


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
    guarded: bool = False,
) -> Outcome:
    """Run *argv* and wait at most *timeout* seconds; never raises for what the child does.

    *argv[0]* is a path (``PATH`` is never searched: a bare name is not started).  *env*:
    the child's whole environment (default: this process's; :func:`helper_env` for the
    library's own helpers).  *cwd*: an absolute folder the caller made (default: a fresh
    private one, see :func:`safe_workdir`).  *input*: bytes for its standard input (default:
    none, ``/dev/null``).  *guarded*: *argv* is a Python child whose code begins with
    :data:`DIE_WITH_PARENT` (:func:`guarded_code`); any other program is started through the
    launcher, which arranges the same.  An exception while waiting (``KeyboardInterrupt``)
    kills the child's group and propagates.
    """
    command = tuple(str(a) for a in argv)
    if cwd is not None and not os.path.isabs(cwd):
        raise ValueError(f"children.run: cwd must be an absolute path, got {cwd!r}")
    environment = dict(os.environ if env is None else env)
    environment[PARENT_VARIABLE] = str(os.getpid())
    launched = tuple(command if guarded or os.name != "posix" else _launched(command))
    if cwd is None:
        with safe_workdir() as folder:
            return _run(command, launched, timeout, environment, folder, input)
    return _run(command, launched, timeout, environment, cwd, input)


def _run(
    argv: tuple[str, ...],
    launched: tuple[str, ...],
    timeout: float,
    env: Mapping[str, str],
    cwd: str,
    data: bytes | None,
) -> Outcome:
    started = time.monotonic()
    posix = os.name == "posix"
    if not argv or os.sep not in argv[0]:
        shown = argv[0] if argv else "(no program)"
        return Outcome(
            argv,
            timeout,
            start_error=(
                f"{shown} is no path: a program is started by its path, never looked up in "
                "PATH (whose empty or relative entries name the working directory)"
            ),
        )
    if posix and not os.path.exists(argv[0]):  # the launcher would report it less plainly
        error = FileNotFoundError(2, "No such file or directory", argv[0])
        return Outcome(argv, timeout, start_error=f"{argv[0]}: FileNotFoundError: {error}")
    try:
        proc = subprocess.Popen(
            launched,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env),
            start_new_session=posix,
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
