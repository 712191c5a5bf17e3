"""Read an NVRTC library through ctypes: its version and the GPU architectures it compiles for.

Nothing here raises for a bad library: a missing file, a file that is not a shared library, a
library without the NVRTC entry points (or an NVRTC older than 11.2, which lacks
``nvrtcGetSupportedArchs``) all give an :class:`NvrtcInfo` whose ``error`` says what is wrong.

The library is unloaded again after reading, so probing never changes which NVRTC a later
``import torch`` binds to.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import parse_arch

#: First NVRTC whose Jiterator compiles straight to the device's SASS target, with no PTX
#: fallback (see docs/concepts.md).
JITERATOR_SASS_SINCE: tuple[int, int] = (11, 8)

#: Told each native step before it is taken (``"calling nvrtcVersion"``): the test child of
#: :mod:`.isolation` passes one, so a crash or a hang is reported with the call that caused it.
Trace = Callable[[str], None]


def _no_trace(what: str) -> None:
    """The default :data:`Trace`: nobody listens."""


@dataclass(frozen=True)
class NvrtcCandidate:
    """One place the probe looked for NVRTC, and what it concluded about it."""

    path: str
    origin: str
    """Which step of the search produced it (e.g. ``"torch preload: sys.path[2]"``)."""
    exists: bool
    chosen: bool = False
    note: str = ""
    """Why it was chosen or passed over."""
    working_directory: bool = False
    """Found through the working directory (``''`` or the cwd on ``sys.path``, a relative
    ``LD_LIBRARY_PATH`` entry): reported, never loaded by the probe."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "origin": self.origin,
            "exists": self.exists,
            "chosen": self.chosen,
            "note": self.note,
            "working_directory": self.working_directory,
        }


@dataclass(frozen=True)
class NvrtcInfo:
    """The NVRTC library torch would load, as far as the probe can tell."""

    path: str | None = None
    version: tuple[int, int] | None = None
    supported_archs: tuple[str, ...] = ()
    source: str = ""
    """How this library was found (or why none was)."""
    candidates: tuple[NvrtcCandidate, ...] = field(default=())
    error: str | None = None
    crash: str | None = None
    """What happened when a test process loaded and called this library (a crash, a signal,
    a hang), when it did not survive; ``None`` when it behaved or was not tried."""
    replaces: str | None = None
    """The NVRTC torch would load by itself, when the one it will call is another library
    already loaded in this process (the NVRTC remedy's, issue 12); ``None`` otherwise."""

    @property
    def version_string(self) -> str | None:
        return None if self.version is None else f"{self.version[0]}.{self.version[1]}"

    @property
    def known(self) -> bool:
        """Whether both the version and the arch list could be read."""
        return self.version is not None and bool(self.supported_archs)

    def supports(self, arch: str) -> bool | None:
        """Whether *arch* is in the supported list; ``None`` when the list is unknown."""
        if not self.supported_archs:
            return None
        return _normalise(arch) in self.supported_archs

    def jiterator_fails_for(self, arch: str) -> bool:
        """True iff NVRTC >= 11.8 is known and *arch* is missing from its supported archs.

        False whenever NVRTC is missing or unreadable: the probe then cannot claim a failure.
        """
        if self.version is None or self.version < JITERATOR_SASS_SINCE:
            return False
        if not self.supported_archs:
            return False
        return _normalise(arch) not in self.supported_archs

    def describe(self) -> str:
        """``"NVRTC 12.8 at /path"``, or what went wrong."""
        if self.path is None:
            return "no NVRTC library found"
        if self.version is None:
            return f"NVRTC at {self.path} (unreadable)"
        return f"NVRTC {self.version_string} at {self.path}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "version": self.version_string,
            "supported_archs": list(self.supported_archs),
            "source": self.source,
            "error": self.error,
            "crash": self.crash,
            "replaces": self.replaces,
            "candidates": [c.as_dict() for c in self.candidates],
        }


def _normalise(arch: str) -> str:
    return parse_arch(arch)


def _unload(handle: int) -> None:
    """Drop the reference ctypes took on a library, so it is unmapped if nobody else uses it."""
    try:
        import _ctypes

        if sys.platform == "win32":
            _ctypes.FreeLibrary(handle)
        else:
            _ctypes.dlclose(handle)
    except Exception:  # pragma: no cover - unloading is best effort
        pass


def _error_text(lib: Any, code: int) -> str:
    try:
        func = lib.nvrtcGetErrorString
        func.restype = ctypes.c_char_p
        func.argtypes = [ctypes.c_int]
        text = func(code)
        if text:
            return f"{text.decode(errors='replace')} ({code})"
    except Exception:
        pass
    return f"error code {code}"


def read_loaded(lib: Any, path: str, *, source: str = "", trace: Trace = _no_trace) -> NvrtcInfo:
    """Read version and archs from an already loaded library object (``ctypes.CDLL``-like)."""
    try:
        version_fn = lib.nvrtcVersion
    except AttributeError:
        return NvrtcInfo(
            path=path,
            source=source,
            error=f"{path} is not an NVRTC library: it has no nvrtcVersion entry point",
        )
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    version_fn.restype = ctypes.c_int
    trace("calling nvrtcVersion")
    code = version_fn(ctypes.byref(major), ctypes.byref(minor))
    if code != 0:
        return NvrtcInfo(
            path=path,
            source=source,
            error=f"nvrtcVersion failed at {path}: {_error_text(lib, code)}",
        )
    if not (1 <= major.value <= 99 and 0 <= minor.value <= 99):
        return NvrtcInfo(
            path=path,
            source=source,
            error=(
                f"nvrtcVersion at {path} reported {major.value}.{minor.value}, which is no "
                "NVRTC version"
            ),
        )
    version = (major.value, minor.value)
    shown = f"{version[0]}.{version[1]}"
    try:
        count_fn = lib.nvrtcGetNumSupportedArchs
        list_fn = lib.nvrtcGetSupportedArchs
    except AttributeError:
        return NvrtcInfo(
            path=path,
            version=version,
            source=source,
            error=(
                f"NVRTC {shown} at {path} cannot list its archs "
                "(nvrtcGetSupportedArchs appeared in CUDA 11.2)"
            ),
        )
    count = ctypes.c_int(0)
    count_fn.restype = ctypes.c_int
    trace("calling nvrtcGetNumSupportedArchs")
    code = count_fn(ctypes.byref(count))
    if code != 0 or not 0 < count.value < 4096:
        reason = _error_text(lib, code) if code != 0 else f"it reported {count.value} archs"
        return NvrtcInfo(
            path=path,
            version=version,
            source=source,
            error=f"nvrtcGetNumSupportedArchs failed for NVRTC {shown} at {path}: {reason}",
        )
    values = (ctypes.c_int * count.value)()
    list_fn.restype = ctypes.c_int
    trace("calling nvrtcGetSupportedArchs")
    code = list_fn(values)
    if code != 0:
        return NvrtcInfo(
            path=path,
            version=version,
            source=source,
            error=(
                f"nvrtcGetSupportedArchs failed for NVRTC {shown} at {path}: "
                f"{_error_text(lib, code)}"
            ),
        )
    odd = sorted(v for v in set(values) if not 10 <= v <= 999)
    if odd:
        return NvrtcInfo(
            path=path,
            version=version,
            source=source,
            error=(
                f"nvrtcGetSupportedArchs of NVRTC {shown} at {path} listed "
                f"{', '.join(map(str, odd[:4]))}, which are no GPU architectures"
            ),
        )
    archs = tuple(f"sm_{value}" for value in sorted(set(values)))
    return NvrtcInfo(path=path, version=version, supported_archs=archs, source=source)


def info_from_dict(data: Mapping[str, Any], *, path: str, source: str) -> NvrtcInfo:
    """An :class:`NvrtcInfo` from the facts a test process reported (its ``as_dict()``)."""
    text = data.get("version")
    version: tuple[int, int] | None = None
    if isinstance(text, str) and "." in text:
        head, _, tail = text.partition(".")
        version = (int(head), int(tail))
    return NvrtcInfo(
        path=path,
        version=version,
        supported_archs=tuple(str(a) for a in data.get("supported_archs") or ()),
        source=source,
        error=data.get("error"),
        crash=data.get("crash"),
    )


_PROGRAM = b'extern "C" __global__ void blackwell_compat_probe(float* x) { x[0] = 1.0f; }'


def compile_here(
    path: str, arch: str, preload: Sequence[str] = (), *, trace: Trace = _no_trace
) -> dict[str, Any]:
    """Compile a tiny program for *arch* with the NVRTC at *path*, in this very process (the
    test child runs it; see :func:`blackwell_compat.emulation.compile_log`):
    ``{"result": code, "log": text}``, or ``{"error": text}`` when it is not a usable NVRTC.
    *preload*: libraries loaded first, as the NVRTC remedy loads the builtins (issue 12)."""
    try:
        for extra in preload:
            trace(f"loading {extra}")
            ctypes.CDLL(extra)
        trace(f"loading {path}")
        lib = ctypes.CDLL(path)
        create, compile_, destroy = (
            lib.nvrtcCreateProgram,
            lib.nvrtcCompileProgram,
            lib.nvrtcDestroyProgram,
        )
        log_size_fn, log_fn = lib.nvrtcGetProgramLogSize, lib.nvrtcGetProgramLog
    except (OSError, AttributeError) as exc:
        return {"error": f"{path} is not a usable NVRTC library: {exc}"}
    for fn in (create, compile_, destroy, log_size_fn, log_fn):
        fn.restype = ctypes.c_int
    program = ctypes.c_void_p()
    trace("calling nvrtcCreateProgram")
    code = create(ctypes.byref(program), _PROGRAM, b"blackwell_compat.cu", 0, None, None)
    if code != 0:
        return {"error": f"nvrtcCreateProgram failed with {code} at {path}"}
    try:
        options = (ctypes.c_char_p * 1)(f"--gpu-architecture={arch}".encode())
        trace("calling nvrtcCompileProgram")
        result = int(compile_(program, 1, options))
        size = ctypes.c_size_t(0)
        text = ""
        if log_size_fn(program, ctypes.byref(size)) == 0 and size.value > 1:
            buffer = ctypes.create_string_buffer(size.value)
            if log_fn(program, buffer) == 0:
                text = buffer.value.decode(errors="replace")
        return {"result": result, "log": text}
    finally:
        destroy(ctypes.byref(program))


def read_nvrtc_here(
    path: str | os.PathLike[str], *, source: str = "", trace: Trace = _no_trace
) -> NvrtcInfo:
    """:func:`~blackwell_compat.probing.isolation.read_nvrtc` in this very process (the test
    child uses it)."""
    text = os.fspath(path)
    source = source or "given explicitly"
    if not os.path.exists(text):
        return NvrtcInfo(path=text, source=source, error=f"{text} does not exist")
    if os.path.isdir(text):
        return NvrtcInfo(path=text, source=source, error=f"{text} is a folder, not a library")
    try:
        trace(f"loading {text}")
        lib = ctypes.CDLL(text)
    except OSError as exc:
        return NvrtcInfo(
            path=text,
            source=source,
            error=f"{text} could not be loaded as a shared library: {exc}",
        )
    try:
        return read_loaded(lib, text, source=source, trace=trace)
    except Exception as exc:  # a library with the names but not the behaviour
        return NvrtcInfo(path=text, source=source, error=f"reading {text} failed: {exc!r}")
    finally:
        _unload(lib._handle)
