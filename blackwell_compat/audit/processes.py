"""Every process of the audited program joins the audit: forked children keep recording,
Python interpreters it starts join through the environment, and each writes to a spool that
the auditing process merges.  The process state of an audit lives here."""

from __future__ import annotations

import atexit
import json
import multiprocessing.util as mp_util
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from ..config import HELPER_MARK
from .model import AUDIT_VARIABLE
from .recorder import Recorder

_PYTHON_NAME = re.compile(r"python[0-9.]*(\.exe)?|pythonw(\.exe)?", re.IGNORECASE)


def _is_python(program: str) -> bool:
    if not program:
        return False
    if _PYTHON_NAME.fullmatch(os.path.basename(program)):
        return True
    try:
        return os.path.realpath(program) == os.path.realpath(sys.executable)
    except (OSError, ValueError):
        return False


def _first_word(args: Any) -> str:
    if isinstance(args, (str, bytes, os.PathLike)):
        return os.fsdecode(args).split()[0] if os.fsdecode(args).split() else ""
    try:
        return os.fsdecode(next(iter(args)))
    except (TypeError, StopIteration, ValueError):
        return ""


def _describe_command(args: Any) -> str:
    if isinstance(args, (str, bytes, os.PathLike)):
        return os.fsdecode(args)
    try:
        return " ".join(os.fsdecode(a) for a in args)
    except (TypeError, ValueError):
        return repr(args)


class Process:
    """This process's part of an audit: its recorder, the processes it started, its spool."""

    def __init__(self, spool: str, recorder: Recorder, root: bool) -> None:
        self.spool = spool
        self.recorder = recorder
        self.root = root
        self.pid = os.getpid()
        self.launches: list[dict[str, Any]] = []
        self.path = os.path.join(spool, f"{self.pid}-{uuid.uuid4().hex[:12]}.json")
        self._write_lock = threading.Lock()
        self.finished = False

    def launched(self, kind: str, program: str, command: str, joins: bool) -> None:
        self.launches.append(
            {"kind": kind, "program": program, "command": command[:300], "joins": joins}
        )
        if not self.root:
            self.write("running")

    def write(self, state: str, exit_code: int | None = None) -> None:
        """Write this process's records (children only; atomic, so a reader never sees half)."""
        if self.root or self.finished:
            return
        data = {
            "pid": self.pid,
            "ppid": os.getppid(),
            "argv": list(sys.argv),
            "state": state,
            "exit_code": exit_code,
            "launches": list(self.launches),
            "sites": self.recorder.as_dicts(),
        }
        if not self._write_lock.acquire(timeout=1.0):  # a signal handler interrupted a write
            return
        try:
            tmp = f"{self.path}.{threading.get_ident()}.tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.replace(tmp, self.path)
        except OSError:  # the spool is gone (the audit ended): nothing to report to
            pass
        finally:
            self._write_lock.release()
        if state != "running":
            self.finished = True


_current: Process | None = None
_real_exit = os._exit
_hooks_installed = False


def _audit_event(event: str, args: tuple[Any, ...]) -> None:
    """``sys.addaudithook`` hook: note every process the program starts (cheap otherwise)."""
    process = _current
    if process is None or not event.startswith(("os.", "subprocess.")):
        return
    if event == "subprocess.Popen":
        executable, command, _cwd, env = args
        program = os.fsdecode(executable) if executable else _first_word(command)
        python = _is_python(program)
        if env is not None and (HELPER_MARK in env or os.fsencode(HELPER_MARK) in env):
            # blackwell-compat's own test process (a probe, a remedy's check): none of the
            # program's code runs there.
            process.launched("helper", program, _describe_command(command), False)
            return
        joins = python and (
            env is None or AUDIT_VARIABLE in env or os.fsencode(AUDIT_VARIABLE) in env
        )
        process.launched("subprocess", program, _describe_command(command), joins)
    elif event in ("os.posix_spawn", "os.spawn", "os.exec"):
        path, argv, env = args[-3:]
        program = os.fsdecode(path)
        python = _is_python(program)
        joins = python and (
            env is None or AUDIT_VARIABLE in env or os.fsencode(AUDIT_VARIABLE) in env
        )
        process.launched(event[3:], program, _describe_command(argv), joins)
        if event == "os.exec":  # this image ends here; the new one (if Python) joins anew
            process.write("exec")
    elif event == "os.system":
        command = os.fsdecode(args[0])
        process.launched("system", _first_word(command), command, False)


def _exit_hook(status: int) -> NoReturn:
    """``os._exit`` while an audit runs: report first (``fork`` pool workers end this way).

    In the auditing process itself the report is made and handed to the ``on_exit`` of
    :func:`run`, and the process ends with the audit's exit status instead of *status*.
    """
    process = _current
    if process is not None and process.root and process.pid == os.getpid():
        handler = _root_exit
        if handler is not None:
            try:
                _real_exit(handler(status))
            except BaseException:  # never keep a process alive that asked to end
                _real_exit(status)
    finish(exit_code=status)
    _real_exit(status)


# In the auditing process during run(): makes and hands on the report when the program calls
# os._exit; returns the exit status to end with (set through :func:`on_root_exit`).
_root_exit: Callable[[int], int] | None = None


@contextmanager
def on_root_exit(handler: Callable[[int], int]) -> Iterator[None]:
    """While the block runs, ``os._exit`` in the auditing process calls *handler* first."""
    global _root_exit
    _root_exit = handler
    try:
        yield
    finally:
        _root_exit = None


def exit_now(status: int) -> NoReturn:
    """End this process at once with *status* (the real ``os._exit``, not the audit's hook)."""
    _real_exit(status)


def finish(exit_code: int | None = None) -> None:
    process = _current
    if process is not None and not process.root and process.pid == os.getpid():
        process.write("complete", exit_code)


def _report_on_sigterm() -> None:
    """``Pool.terminate()`` ends workers with SIGTERM: report first, then die of it as before.

    Only where SIGTERM has its default action (a handler of the program's own stays) and only
    in the main thread (where Python allows setting one).
    """

    def handler(signum: int, frame: Any) -> None:
        finish(exit_code=-signum)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    try:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError, AttributeError):  # not the main thread; no SIGTERM here
        pass


def _after_fork_in_child() -> None:
    global _current
    parent = _current
    if parent is None:
        return
    parent.recorder.reset_after_fork()
    child = Process(parent.spool, parent.recorder, root=False)
    parent.recorder.on_new = lambda: child.write("running")
    _current = child
    child.write("running")
    _report_on_sigterm()


def _after_fork_in_parent() -> None:
    process = _current
    if process is not None:
        process.launched("fork", sys.executable, "os.fork()", True)


def _watch_multiprocessing() -> None:
    """``multiprocessing`` starts ``spawn``/``forkserver`` interpreters without an audit event:
    note them too, so that one that cannot join is counted (for this process's lifetime)."""
    original = mp_util.spawnv_passfds
    if getattr(original, "_blackwell_compat_watched", False):
        return

    def spawnv_passfds(path: Any, args: Any, passfds: Any) -> Any:
        process = _current
        if process is not None:
            program, command = os.fsdecode(path), _describe_command(args)
            if "multiprocessing.resource_tracker" in command:  # runs none of the program's code
                process.launched("helper", program, command, False)
            else:
                process.launched("multiprocessing", program, command, True)
        return original(path, args, passfds)

    spawnv_passfds._blackwell_compat_watched = True  # type: ignore[attr-defined]
    mp_util.spawnv_passfds = spawnv_passfds


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    sys.addaudithook(_audit_event)  # audit hooks cannot be removed: it checks _current
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(
            after_in_child=_after_fork_in_child, after_in_parent=_after_fork_in_parent
        )
    atexit.register(finish)
    try:
        _watch_multiprocessing()
    except (ImportError, AttributeError):  # pragma: no cover - a platform without it
        pass
    _hooks_installed = True


def join_from_environment() -> bool:
    """In a Python process the program started: record into the audit's spool.

    Called by the package import when :data:`AUDIT_VARIABLE` is set; emulation itself comes
    from ``BLACKWELL_COMPAT_EMULATE``, which the auditing process sets too.
    """
    global _current
    spool = os.environ.get(AUDIT_VARIABLE, "")
    if not spool or not os.path.isdir(spool) or _current is not None:
        return False
    # Imported here: this module is loaded by the package root of every process an audit
    # starts; only the one that joins needs the dispatcher.
    from ..ops import dispatcher as dispatch

    recorder = Recorder()
    process = Process(spool, recorder, root=False)
    recorder.on_new = lambda: process.write("running")
    _install_hooks()
    os._exit = _exit_hook
    _current = process
    dispatch.set_recorder(recorder)
    process.write("running")
    _report_on_sigterm()
    return True


def collect(spool: str, root: Process) -> dict[str, Any]:
    """Merge the spool into the root's recorder; say which processes are covered."""
    children: list[dict[str, Any]] = []
    for name in sorted(os.listdir(spool)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(spool, name), encoding="utf-8") as handle:
                children.append(json.load(handle))
        except (OSError, ValueError):
            continue
    for child in children:
        root.recorder.merge(child.get("sites", []))
    launches = list(root.launches) + [item for c in children for item in c.get("launches", [])]
    expected = [item for item in launches if item["joins"]]
    lost = [
        item
        for item in launches
        if item["kind"] not in ("fork", "helper")
        and _is_python(item["program"])
        and not item["joins"]
    ]
    joined = children  # an image that exec'd counts for its own start; the new one for its
    uncovered = [
        f"{item['kind']}: {item['command']} (a Python process started with an environment "
        f"that drops {AUDIT_VARIABLE} / BLACKWELL_COMPAT_EMULATE)"
        for item in lost
    ]
    missing = len(expected) - len(joined)
    if missing > 0:
        uncovered.append(
            f"{missing} Python process(es) the program started did not join the audit (an "
            "interpreter without blackwell-compat's start-up hook, or one that ended before "
            "importing it): " + "; ".join(item["command"] for item in expected)[:600]
        )
    unfinished = [c for c in joined if c.get("state") == "running"]
    return {
        "audited": 1 + len(joined),
        "children": [
            {
                "pid": c.get("pid"),
                "ppid": c.get("ppid"),
                "argv": c.get("argv", [])[:8],
                "state": c.get("state"),
                "exit_code": c.get("exit_code"),
            }
            for c in joined
        ],
        "started": [
            {"kind": item["kind"], "command": item["command"], "audited": item["joins"]}
            for item in launches
        ],
        "unfinished": len(unfinished),
        "uncovered": uncovered,
    }


@contextmanager
def every_process(
    recorder: Recorder, arch: str, fix: bool, device: str = "cpu"
) -> Iterator[Process]:
    """Make the program's child processes join this audit, for the duration of the block."""
    global _current
    spool = tempfile.mkdtemp(prefix="blackwell-compat-audit-")
    process = Process(spool, recorder, root=True)
    variables = {
        AUDIT_VARIABLE: spool,
        "BLACKWELL_COMPAT_EMULATE": arch,
        "BLACKWELL_COMPAT_EMULATE_DEVICE": device,
    }
    if fix:
        variables["BLACKWELL_COMPAT_AUTO"] = "1"
    saved = {name: os.environ.get(name) for name in variables}
    _install_hooks()
    previous_exit = os._exit
    os.environ.update(variables)
    os._exit = _exit_hook
    _current = process
    try:
        yield process
    finally:
        if os.getpid() == process.pid:
            _current = None
            os._exit = previous_exit
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def remove_spool(spool: str) -> None:
    shutil.rmtree(spool, ignore_errors=True)
