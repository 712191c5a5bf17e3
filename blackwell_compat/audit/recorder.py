"""The recorder the dispatcher calls for every Jiterator-bound call: records by call site (the
first frame outside torch and this library)."""

from __future__ import annotations

import linecache
import os
import runpy
import sys
import threading
import time
from types import FrameType
from typing import Any

from .model import OpUse, Site, SiteReport, sites_as_dicts


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
    return linecache.getline(site.file, site.line).strip()


class Recorder:
    """Collects the dispatcher's :class:`~blackwell_compat.ops.spec.JitCall` records by site."""

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
        key = (call.op, call.dtype, call.mode, call.kernel)
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
                    fused_ops=list(getattr(call, "fused_ops", ())),
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
            return sites_as_dicts(list(self.sites.values()))
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
                    key = (op["op"], op["dtype"], op["mode"], op["kernel"])
                    use = report.uses.get(key)
                    if use is None:
                        use = report.uses[key] = OpUse(
                            op=op["op"],
                            entry=op["entry"],
                            dtype=op["dtype"],
                            kernel=op["kernel"],
                            source=op["source"],
                            mode=op["mode"],
                            fused_ops=list(op.get("fused_ops", [])),
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
