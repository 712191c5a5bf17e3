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
the report.  Child processes the program starts are not audited (they would need their own
``BLACKWELL_COMPAT_EMULATE``).
"""

from __future__ import annotations

import io
import os
import runpy
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

from . import __version__

TAIL_CHARS = 4000


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

    @property
    def failing_sites(self) -> list[SiteReport]:
        return [s for s in self.sites if s.failing]

    @property
    def guarded_sites(self) -> list[SiteReport]:
        return [s for s in self.sites if not s.failing]

    @property
    def exit_status(self) -> int:
        """1 when a site would fail on the GPU, else the program's own exit code."""
        if self.failing_sites:
            return 1
        return self.exit_code

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": "blackwell-compat audit",
            "version": __version__,
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
            "sites": [
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
                for s in self.sites
            ],
            "summary": {
                "sites": len(self.sites),
                "failing_sites": len(self.failing_sites),
                "guarded_sites": len(self.guarded_sites),
                "calls": sum(s.calls for s in self.sites),
            },
            "exit_status": self.exit_status,
        }


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

    def ordered(self) -> list[SiteReport]:
        with self._lock:
            return sorted(
                self.sites.values(), key=lambda r: (not r.failing, r.site.file, r.site.line)
            )


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
    from .errors import ConfigError

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
) -> AuditReport:
    """Run *target* under emulation and return what it reached.  The program's output goes
    to *stdout*/*stderr* (default: this process's)."""
    from . import config, dispatch, emulation, engine

    arch = config.parse_arch(arch, source="audit --arch")
    check_target(target)
    recorder = Recorder()
    exit_code, error = 0, None
    patches: list[dict[str, Any]] = []
    out_stream, err_stream = stdout or sys.stdout, stderr or sys.stderr
    started = time.perf_counter()
    with emulation.emulate(arch), _program_streams(out_stream, err_stream) as (out, err):
        applied: list[str] = []
        if fix:
            report = engine.apply()
            applied = [e.name for e in report.entries if e.state in ("applied", "pending-import")]
            patches = [
                {"name": e.name, "state": e.state, "reason": e.reason} for e in report.entries
            ]
        previous = dispatch.set_recorder(recorder)
        try:
            with _program_argv(target):
                if target.kind == "script":
                    runpy.run_path(target.name, run_name="__main__")
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
            dispatch.set_recorder(previous)
            if applied:
                engine.revert(applied)
        out.flush()
        err.flush()
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
    if not report.sites:
        lines += ["", "No call reaches a Jiterator kernel: this program runs on the emulated GPU."]
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
