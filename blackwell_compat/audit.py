"""``audit``: run a program on the CPU as if on an affected GPU and list every Jiterator call site.

The program runs in this interpreter under :func:`blackwell_compat.emulate` with a recorder in
the dispatcher (:func:`blackwell_compat.dispatch.set_recorder`): every call that would compile
a Jiterator kernel on the emulated GPU is recorded (op, dtype, shapes, the first stack frame
outside torch and blackwell-compat) and then computed with PyTorch's own CPU kernel, so the
program continues with the correct result and one run lists every site.

With ``fix=True`` the patches are applied first (``bc.apply()``, the op guard included); calls
the guard rewrites are reported as *guarded*, and whatever still reaches a Jiterator kernel is
reported as *failing*.

The program's output goes where it would go (see :mod:`blackwell_compat.cli.audit_cmd` for the
``--json`` case); its exit code, an uncaught exception and the tail of its output are part of
the report.

Every process of the program is audited, and the report is one: a child made by ``os.fork``
(a ``fork`` pool worker included) keeps recording, and Python interpreters the program starts
(``spawn``/``forkserver`` workers, ``subprocess`` of Python) inherit ``BLACKWELL_COMPAT_EMULATE``
and :data:`AUDIT_VARIABLE`, and join through the package import that the start-up hook makes.
Each process other than the auditing one writes what it saw to a spool directory (at once for
every new call site, so a worker that is killed still leaves its sites; at exit, ``os._exit``
included, with the final counts), and the auditing process merges them.  A Python process the
program started that did not join (an environment without these variables, an interpreter
without the hook) is counted and named: the report then says it is incomplete and the exit
status is :data:`EXIT_INCOMPLETE` unless a failing site already makes it 1.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import re
import runpy
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from types import FrameType
from typing import Any, NoReturn, TextIO

from . import config
from .errors import ConfigError

TAIL_CHARS = 4000
#: Set, for the program's processes, to the spool directory they write their records to.
AUDIT_VARIABLE = "_BLACKWELL_COMPAT_AUDIT"
#: Exit status when no site fails but a process of the program could not be audited.
EXIT_INCOMPLETE = 3


@dataclass(frozen=True)
class Target:
    """What to run: a script path or a module name, and its arguments."""

    kind: str  # "script" or "module"
    name: str
    args: tuple[str, ...] = ()

    def describe(self) -> str:
        head = f"-m {self.name}" if self.kind == "module" else self.name
        return " ".join([head, *self.args])


@dataclass(frozen=True)
class Site:
    """Where the program called into torch: the first frame outside torch and this library."""

    file: str
    line: int
    function: str
    code: str = ""

    def describe(self) -> str:
        return f"{_short(self.file)}:{self.line} in {self.function}"


@dataclass
class OpUse:
    """One op/dtype/mode at one site, with how often and on which shapes."""

    op: str
    entry: str
    dtype: str
    kernel: str
    source: str
    mode: str
    count: int = 0
    shapes: list[list[list[int]]] = field(default_factory=list)

    @property
    def failing(self) -> bool:
        return self.mode == "emulate"


@dataclass
class SiteReport:
    site: Site
    uses: dict[tuple[str, str, str], OpUse] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(u.count for u in self.uses.values())

    @property
    def failing(self) -> bool:
        return any(u.failing for u in self.uses.values())


@dataclass
class AuditReport:
    target: Target
    arch: str
    fix: bool
    sites: list[SiteReport]
    exit_code: int
    error: str | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    patches: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    processes: dict[str, Any] = field(default_factory=dict)

    @property
    def uncovered(self) -> list[str]:
        """Processes of the program whose calls are not in the report (empty: all covered)."""
        return list(self.processes.get("uncovered", []))

    @property
    def failing_sites(self) -> list[SiteReport]:
        return [s for s in self.sites if s.failing]

    @property
    def guarded_sites(self) -> list[SiteReport]:
        return [s for s in self.sites if not s.failing]

    @property
    def exit_status(self) -> int:
        """1 when a site would fail on the GPU; else :data:`EXIT_INCOMPLETE` when a process of
        the program could not be audited; else the program's own exit code."""
        if self.failing_sites:
            return 1
        if self.uncovered:
            return EXIT_INCOMPLETE
        return self.exit_code

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": "blackwell-compat audit",
            "version": _library_version(),
            "arch": self.arch,
            "fix": self.fix,
            "target": {
                "kind": self.target.kind,
                "name": self.target.name,
                "args": list(self.target.args),
            },
            "program": {
                "exit_code": self.exit_code,
                "error": self.error,
                "stdout_tail": self.stdout_tail,
                "stderr_tail": self.stderr_tail,
                "seconds": round(self.seconds, 3),
            },
            "patches": self.patches,
            "processes": self.processes,
            "sites": _sites_as_dicts(self.sites),
            "summary": {
                "sites": len(self.sites),
                "failing_sites": len(self.failing_sites),
                "guarded_sites": len(self.guarded_sites),
                "calls": sum(s.calls for s in self.sites),
            },
            "exit_status": self.exit_status,
        }


def _library_version() -> str:
    """This library's version, from its distribution's metadata (written from ``__version__``):
    the audit never imports the package root, which itself imports the audit to join it."""
    try:
        return metadata.version("blackwell-compat")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from an uninstalled tree
        return "unknown"


def _sites_as_dicts(sites: list[SiteReport]) -> list[dict[str, Any]]:
    return [
        {
            "file": s.site.file,
            "line": s.site.line,
            "function": s.site.function,
            "code": s.site.code,
            "calls": s.calls,
            "failing": s.failing,
            "stack": s.stack,
            "ops": [
                {
                    "op": u.op,
                    "entry": u.entry,
                    "dtype": u.dtype,
                    "kernel": u.kernel,
                    "source": u.source,
                    "mode": u.mode,
                    "count": u.count,
                    "shapes": u.shapes,
                }
                for u in s.uses.values()
            ],
        }
        for s in sites
    ]


# -- stack inspection ------------------------------------------------------------------------


def _package_dir(module_name: str) -> str | None:
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) + os.sep if path else None


class _Frames:
    """Decides which frames belong to torch / this library (computed once torch is in)."""

    def __init__(self) -> None:
        self._skip: tuple[str, ...] | None = None

    def skip_prefixes(self) -> tuple[str, ...]:
        if self._skip is None:
            prefixes = [p for p in (_package_dir("torch"), _package_dir("blackwell_compat")) if p]
            runpy_dir = os.path.dirname(os.path.abspath(runpy.__file__))
            prefixes += [os.path.join(runpy_dir, "runpy.py"), os.path.join(runpy_dir, "importlib")]
            self._skip = tuple(prefixes)
        return self._skip

    def outside(self, frame: FrameType | None, limit: int = 4) -> tuple[Site | None, list[str]]:
        skip = self.skip_prefixes()
        site: Site | None = None
        stack: list[str] = []
        while frame is not None and len(stack) < limit:
            filename = frame.f_code.co_filename
            internal = filename.startswith("<frozen") or (
                os.path.isabs(filename) and filename.startswith(skip)
            )
            if not internal:
                if not filename.startswith("<"):  # one site, whatever cwd-relative name ran it
                    filename = os.path.abspath(filename)
                here = Site(filename, frame.f_lineno, frame.f_code.co_name)
                if site is None:
                    site = Site(filename, frame.f_lineno, frame.f_code.co_name, _line(here))
                stack.append(here.describe())
            frame = frame.f_back
        return site, stack


def _line(site: Site) -> str:
    import linecache

    return linecache.getline(site.file, site.line).strip()


def _short(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith(".." + os.sep + "..") else relative


# -- recording --------------------------------------------------------------------------------


class Recorder:
    """Collects the dispatcher's :class:`~blackwell_compat.dispatch.JitCall` records by site."""

    MAX_SHAPES = 5

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frames = _Frames()
        self.sites: dict[Site, SiteReport] = {}
        #: Called (outside the lock) when a site or an op at a site is seen the first time,
        #: and at most every half second for counts (a process's spool stays current).
        self.on_new: Any = None
        self.written = 0.0

    def reset_after_fork(self) -> None:
        """In a forked child: a fresh lock, and only the child's own calls from now on."""
        self._lock = threading.Lock()
        self.sites = {}

    def __call__(self, call: Any) -> None:
        site, stack = self._frames.outside(sys._getframe(1))
        if site is None:
            site = Site("<unknown>", 0, "<no Python frame>")
        key = (call.op, call.dtype, call.mode)
        with self._lock:
            report = self.sites.get(site)
            if report is None:
                report = self.sites[site] = SiteReport(site=site, stack=stack)
            use = report.uses.get(key)
            new = use is None
            if use is None:
                use = report.uses[key] = OpUse(
                    op=call.op,
                    entry=call.entry,
                    dtype=call.dtype,
                    kernel=call.kernel,
                    source=call.source,
                    mode=call.mode,
                )
            use.count += 1
            shapes = [list(s) for s in call.shapes]
            if shapes not in use.shapes and len(use.shapes) < self.MAX_SHAPES:
                use.shapes.append(shapes)
        if self.on_new is not None and (new or time.monotonic() - self.written > 0.5):
            self.written = time.monotonic()
            self.on_new()

    def as_dicts(self) -> list[dict[str, Any]]:
        # A timeout: a signal handler may call this while its own thread holds the lock.
        locked = self._lock.acquire(timeout=1.0)
        try:
            return _sites_as_dicts(list(self.sites.values()))
        finally:
            if locked:
                self._lock.release()

    def merge(self, sites: list[dict[str, Any]]) -> None:
        """Add the sites another process recorded (:meth:`as_dicts` form)."""
        with self._lock:
            for data in sites:
                site = Site(data["file"], int(data["line"]), data["function"], data["code"])
                report = self.sites.get(site)
                if report is None:
                    report = self.sites[site] = SiteReport(site=site, stack=list(data["stack"]))
                for op in data["ops"]:
                    key = (op["op"], op["dtype"], op["mode"])
                    use = report.uses.get(key)
                    if use is None:
                        use = report.uses[key] = OpUse(
                            op=op["op"],
                            entry=op["entry"],
                            dtype=op["dtype"],
                            kernel=op["kernel"],
                            source=op["source"],
                            mode=op["mode"],
                        )
                    use.count += int(op["count"])
                    for shapes in op["shapes"]:
                        if shapes not in use.shapes and len(use.shapes) < self.MAX_SHAPES:
                            use.shapes.append(shapes)

    def ordered(self) -> list[SiteReport]:
        with self._lock:
            return sorted(
                self.sites.values(), key=lambda r: (not r.failing, r.site.file, r.site.line)
            )


# -- the program's other processes ---------------------------------------------------------------

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


class _Process:
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


_current: _Process | None = None
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
    _finish(exit_code=status)
    _real_exit(status)


# In the auditing process during run(): makes and hands on the report when the program calls
# os._exit; returns the exit status to end with.
_root_exit: Any = None


def _finish(exit_code: int | None = None) -> None:
    process = _current
    if process is not None and not process.root and process.pid == os.getpid():
        process.write("complete", exit_code)


def _report_on_sigterm() -> None:
    """``Pool.terminate()`` ends workers with SIGTERM: report first, then die of it as before.

    Only where SIGTERM has its default action (a handler of the program's own stays) and only
    in the main thread (where Python allows setting one).
    """
    import signal

    def handler(signum: int, frame: Any) -> None:
        _finish(exit_code=-signum)
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
    child = _Process(parent.spool, parent.recorder, root=False)
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
    import multiprocessing.util as mp_util

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
    atexit.register(_finish)
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
    from . import dispatch

    recorder = Recorder()
    process = _Process(spool, recorder, root=False)
    recorder.on_new = lambda: process.write("running")
    _install_hooks()
    os._exit = _exit_hook
    _current = process
    dispatch.set_recorder(recorder)
    process.write("running")
    _report_on_sigterm()
    return True


def _collect(spool: str, root: _Process) -> dict[str, Any]:
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
def _every_process(recorder: Recorder, arch: str, fix: bool) -> Iterator[_Process]:
    """Make the program's child processes join this audit, for the duration of the block."""
    global _current
    spool = tempfile.mkdtemp(prefix="blackwell-compat-audit-")
    process = _Process(spool, recorder, root=True)
    variables = {AUDIT_VARIABLE: spool, "BLACKWELL_COMPAT_EMULATE": arch}
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


def _remove_spool(spool: str) -> None:
    import shutil

    shutil.rmtree(spool, ignore_errors=True)


# -- running ------------------------------------------------------------------------------------


class _Tee(io.TextIOBase):
    """Writes through to *stream* and keeps the last characters written."""

    def __init__(self, stream: TextIO, limit: int = TAIL_CHARS) -> None:
        self._stream = stream
        self._limit = limit
        self._tail = ""

    def write(self, text: str) -> int:
        self._tail = (self._tail + text)[-self._limit :]
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    @property
    def tail(self) -> str:
        return self._tail


@contextmanager
def _program_streams(stdout: TextIO, stderr: TextIO) -> Iterator[tuple[_Tee, _Tee]]:
    saved = sys.stdout, sys.stderr
    out, err = _Tee(stdout), _Tee(stderr)
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        sys.stdout, sys.stderr = saved


@contextmanager
def _program_argv(target: Target) -> Iterator[None]:
    saved_argv, saved_path = list(sys.argv), list(sys.path)
    if target.kind == "script":
        sys.argv = [target.name, *target.args]
        sys.path.insert(0, os.path.dirname(os.path.abspath(target.name)))
    else:
        sys.argv = [target.name, *target.args]
        sys.path.insert(0, os.getcwd())
    try:
        yield
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def _exit_code(exc: SystemExit, stderr: Any) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=stderr)
    return 1


def check_target(target: Target) -> None:
    """Raise :class:`~blackwell_compat.errors.ConfigError` for a target that cannot run."""
    if target.kind == "script":
        if not os.path.isfile(target.name):
            raise ConfigError(f"audit: no such script: {target.name}")
    elif target.kind == "module":
        import importlib.util

        saved = list(sys.path)
        sys.path.insert(0, os.getcwd())  # as `python -m` does
        try:
            spec = importlib.util.find_spec(target.name)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"audit: cannot find module {target.name!r}: {exc}") from exc
        finally:
            sys.path[:] = saved
        if spec is None:
            raise ConfigError(f"audit: no module named {target.name!r}")
    else:
        raise ConfigError(f"audit: unknown target kind {target.kind!r}")


def run(
    target: Target,
    *,
    arch: str = "sm_121",
    fix: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    on_exit: Any = None,
) -> AuditReport:
    """Run *target* under emulation and return what it reached.  The program's output goes
    to *stdout*/*stderr* (default: this process's).

    A program that ends with ``os._exit(n)`` ends this process too: then, if given,
    ``on_exit(report)`` receives the report first (the command line prints it) and the process
    ends with the report's exit status; without it, with status *n*, as the program asked.
    """
    # Imported here: the package root imports this module in every process an audited program
    # starts (join_from_environment), which must not load the engine or the emulation for it.
    from . import dispatch, emulation, engine

    arch = config.parse_arch(arch, source="audit --arch")
    check_target(target)
    recorder = Recorder()
    exit_code, error = 0, None
    patches: list[dict[str, Any]] = []
    out_stream, err_stream = stdout or sys.stdout, stderr or sys.stderr
    started = time.perf_counter()
    processes: dict[str, Any] = {}
    with (
        emulation.emulate(arch),
        _program_streams(out_stream, err_stream) as (out, err),
        _every_process(recorder, arch, fix) as root,
    ):
        applied: list[str] = []
        if fix:
            report = engine.apply()
            applied = [e.name for e in report.entries if e.state in ("applied", "pending-import")]
            patches = [
                {"name": e.name, "state": e.state, "reason": e.reason} for e in report.entries
            ]
        previous = dispatch.set_recorder(recorder)

        def program_exit(status: int) -> int:
            """The program called os._exit(status) in this process: report, then end."""
            out.flush()
            err.flush()
            dispatch.set_recorder(previous)
            if on_exit is None:
                return status
            report = AuditReport(
                target=target,
                arch=arch,
                fix=fix,
                sites=[],
                exit_code=status,
                error=f"the program ended with os._exit({status})",
                stdout_tail=out.tail,
                stderr_tail=err.tail,
                patches=patches,
                seconds=time.perf_counter() - started,
                processes=_collect(root.spool, root),
            )
            report.sites = recorder.ordered()
            _remove_spool(root.spool)
            on_exit(report)
            return report.exit_status

        global _root_exit
        _root_exit = program_exit
        try:
            with _program_argv(target):
                if target.kind == "script":
                    # An absolute __file__, as `python script.py` gives: one name for each site
                    # in every process, whatever directory a process is in.
                    runpy.run_path(os.path.abspath(target.name), run_name="__main__")
                else:
                    runpy.run_module(target.name, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            exit_code = _exit_code(exc, err)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            traceback.print_exc(file=err)
            exit_code, error = 1, f"{type(exc).__name__}: {exc}"
        finally:
            _root_exit = None
            if os.getpid() == root.pid:
                dispatch.set_recorder(previous)
                if applied:
                    engine.revert(applied)
        out.flush()
        err.flush()
        if os.getpid() != root.pid:
            # A child the program forked ran the rest of the program to its end here: it
            # reports to the spool and ends, as the program would; one report, the parent's.
            _finish(exit_code)
            _real_exit(exit_code)
        processes = _collect(root.spool, root)
        _remove_spool(root.spool)
    return AuditReport(
        target=target,
        arch=arch,
        fix=fix,
        sites=recorder.ordered(),
        exit_code=exit_code,
        error=error,
        stdout_tail=out.tail,
        stderr_tail=err.tail,
        patches=patches,
        seconds=time.perf_counter() - started,
        processes=processes,
    )


# -- rendering ----------------------------------------------------------------------------------


def _shape_text(shapes: list[list[list[int]]]) -> str:
    shown = ["x".join(map(str, s[0])) if s and s[0] else "()" for s in shapes[:3]]
    more = " ..." if len(shapes) > 3 else ""
    return ", ".join(f"[{s}]" for s in shown) + more


def render(report: AuditReport) -> str:
    """The text report (how to read it: docs/audit.md)."""
    lines = [
        f"blackwell-compat audit of `{report.target.describe()}` (emulating {report.arch}"
        + (", with --fix" if report.fix else "")
        + ")",
        f"program exit code: {report.exit_code}"
        + (f" ({report.error})" if report.error else "")
        + f", {report.seconds:.1f} s",
    ]
    if report.patches:
        applied = [p["name"] for p in report.patches if p["state"] in ("applied", "pending-import")]
        lines.append(f"patches applied: {', '.join(applied) or 'none'}")
    audited = int(report.processes.get("audited", 1))
    if audited > 1:
        lines.append(f"processes audited: {audited} (the program and {audited - 1} it started)")
    if report.uncovered:
        lines.append("INCOMPLETE: calls in these processes of the program are not in this report:")
        lines += [f"  - {what}" for what in report.uncovered]
    if not report.sites:
        if report.uncovered:
            lines += ["", "No call reached a Jiterator kernel in the processes audited."]
        else:
            lines += [
                "",
                "No call reaches a Jiterator kernel: this program runs on the emulated GPU.",
            ]
        return "\n".join(lines)
    lines.append("")
    width = max(len(s.site.describe()) for s in report.sites)
    width = min(max(width, 10), 60)
    lines.append(f"{'STATUS':<8} {'CALL SITE':<{width}} {'CALLS':>6}  OP [DTYPE] x COUNT  SHAPES")
    for site_report in report.sites:
        status = "FAIL" if site_report.failing else "guarded"
        uses = list(site_report.uses.values())
        head = site_report.site.describe()
        for index, use in enumerate(uses):
            prefix = (
                f"{status:<8} {head:<{width}} {site_report.calls:>6}"
                if index == 0
                else f"{'':<8} {'':<{width}} {'':>6}"
            )
            lines.append(
                f"{prefix}  {use.entry} [{use.dtype}] x {use.count}  {_shape_text(use.shapes)}"
            )
        if site_report.site.code:
            lines.append(f"{'':<8}   > {site_report.site.code}")
    failing, guarded = report.failing_sites, report.guarded_sites
    lines.append("")
    if failing:
        lines.append(
            f"{len(failing)} call site(s) would fail with `nvrtc: error: invalid value for "
            f"--gpu-architecture (-arch)` on {report.arch}."
        )
        hint = (
            "Fix: bc.apply() at start-up (or `python -m blackwell_compat run -- ...`); "
            "re-run with --fix to check."
        )
        if report.fix:
            hint = "These remain with every patch applied: is the torch patch disabled?"
        lines.append(hint)
    if guarded:
        lines.append(
            f"{len(guarded)} call site(s) run through the op guard's rewrites (correct, slower "
            "than a native kernel; a targeted patch or a real-valued rewrite avoids them)."
        )
    return "\n".join(lines)
