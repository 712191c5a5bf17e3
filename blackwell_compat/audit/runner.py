"""Running the program under emulation, in this interpreter, and making the report."""

from __future__ import annotations

import importlib.util
import io
import os
import runpy
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from .. import config
from ..errors import ConfigError
from .model import TAIL_CHARS, AuditReport, Target
from .processes import collect, every_process, exit_now, finish, on_root_exit, remove_spool
from .recorder import Recorder


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
    device: str = "cpu",
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
    from .. import emulation, engine
    from ..ops import dispatcher as dispatch

    arch = config.parse_arch(arch, source="audit --arch")
    device = config.parse_emulated_device(device, source="audit --device")
    check_target(target)
    recorder = Recorder()
    exit_code, error = 0, None
    patches: list[dict[str, Any]] = []
    out_stream, err_stream = stdout or sys.stdout, stderr or sys.stderr
    started = time.perf_counter()
    processes: dict[str, Any] = {}
    with (
        emulation.emulate(arch, device=device),
        _program_streams(out_stream, err_stream) as (out, err),
        every_process(recorder, arch, fix, device) as root,
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
            final = _final_states(engine.status(), patches) if applied else patches
            report = AuditReport(
                target=target,
                arch=arch,
                device=device,
                fix=fix,
                sites=[],
                exit_code=status,
                error=f"the program ended with os._exit({status})",
                stdout_tail=out.tail,
                stderr_tail=err.tail,
                patches=final,
                seconds=time.perf_counter() - started,
                processes=collect(root.spool, root),
            )
            report.sites = recorder.ordered()
            remove_spool(root.spool)
            on_exit(report)
            return report.exit_status

        try:
            with on_root_exit(program_exit), _program_argv(target):
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
            if os.getpid() == root.pid:
                dispatch.set_recorder(previous)
                if applied:
                    # The states at the end of the run: a patch waiting for an import when the
                    # program started (torch itself, before the program imports it) was applied
                    # by then.
                    patches = _final_states(engine.status(), patches)
                    engine.revert(applied)
        out.flush()
        err.flush()
        if os.getpid() != root.pid:
            # A child the program forked ran the rest of the program to its end here: it
            # reports to the spool and ends, as the program would; one report, the parent's.
            finish(exit_code)
            exit_now(exit_code)
        processes = collect(root.spool, root)
        remove_spool(root.spool)
    return AuditReport(
        target=target,
        arch=arch,
        device=device,
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


def _final_states(statuses: Any, patches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """*patches* (the report's entries from ``apply()``) with each state as it stands now."""
    now = {status.name: status for status in statuses}
    return [
        {"name": p["name"], "state": now[p["name"]].state, "reason": now[p["name"]].reason}
        if p["name"] in now
        else p
        for p in patches
    ]
