"""The NVRTC remedy: torch's Jiterator and fuser compile with an NVRTC that knows the GPU.

torch's LazyNVRTC ``dlopen``s ``libnvrtc.so.<CUDA major>`` on its first NVRTC call, and glibc
answers that name with the first object already loaded under that soname.  So an NVRTC that
lists the GPU's architecture, loaded into the process before torch's own copy is asked for,
is the one torch uses: nothing is rewritten and torch's own kernels run (docs/remedies.md).

Where the capable library comes from, in this order (the first one that lists every needed
architecture and compiles for it wins):

1. ``BLACKWELL_COMPAT_NVRTC``: a library file, or a folder holding one;
2. the project's cache (``python -m blackwell_compat fetch nvrtc``; :mod:`.cache`);
3. CUDA toolkits: ``CUDA_HOME``, ``CUDA_PATH``, ``/usr/local/cuda``, ``/usr/local/cuda-*``;
4. other installed NVIDIA wheels on ``sys.path`` (never torch's own copy).

Every candidate is first loaded, read and made to compile in a child process (the probe's
test process, :mod:`blackwell_compat.probing.isolation`); only one that survived is loaded
here.  When the library can be loaded depends on torch:

- torch not imported: load it (its builtins library first); torch's preload later adds its
  own copy, which nobody calls.
- torch imported, CUDA not initialised (no NVRTC call can have happened): torch's preloaded
  copy is released only if one ``dlopen(path, RTLD_NOLOAD)`` and two ``dlclose`` make it
  disappear from ``/proc/self/maps`` (the second ``dlclose`` drops the reference torch's
  ``ctypes.CDLL`` took and never gives back); if it is still mapped, the reference is taken
  back and nothing changes.  Then the capable one is loaded.
- CUDA initialised: nothing is touched; the report says the remedy needs ``run``,
  ``BLACKWELL_COMPAT_AUTO=1`` or ``apply()`` before the first CUDA use, and the patches serve.

Linux only.  All of this process's remedy state is the one :class:`RemedyState` object.
"""

from __future__ import annotations

import glob
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import config, trusted
from .. import state as process_state
from ..errors import logger
from ..loader import (
    DLOPEN_FLAGS,
    bound_library,
    dlclose,
    dlopen,
    is_mapped,
    linked_by,
    mapped_files,
    read_soname,
    same_file,
)
from ..probing import forget, probe
from ..probing.isolation import compile_verdict, read_nvrtc
from ..probing.locate import TorchBuild, find_nvrtc, locate_torch
from ..probing.nvrtc import NvrtcInfo
from ..probing.platform import Platform
from . import cache

INACTIVE = "inactive"
"""Not asked yet in this process."""
NOT_NEEDED = "not-needed"
"""No GPU (real or emulated) lacks its arch in torch's NVRTC, or torch loads no NVRTC."""
AVAILABLE = "available"
"""A capable NVRTC was found and :func:`activate` would load it (the answer of :func:`plan`)."""
SERVED = "served"
"""A capable NVRTC is loaded and ``dlopen(soname)`` returns it."""
UNAVAILABLE = "unavailable"
"""No capable candidate was found (or none survived its test process)."""
TOO_LATE = "too-late"
"""CUDA was already initialised: torch may have bound its NVRTC; nothing was touched."""
FAILED = "failed"
"""A capable library was found but could not be made the one torch calls (see ``reason``)."""
UNSUPPORTED = "unsupported"
"""Not Linux."""
OFF = "off"
"""Turned off by ``BLACKWELL_COMPAT_NVRTC=off``."""

SOURCE_ORDER = (
    config.NVRTC,
    "the project's cache",
    "CUDA toolkits",
    "installed NVIDIA wheels",
)


@dataclass(frozen=True)
class Candidate:
    """One library the search considered, and what became of it."""

    path: str
    origin: str
    verdict: str
    """Why it was chosen or passed over."""
    version: str | None = None
    archs: tuple[str, ...] = ()
    chosen: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "origin": self.origin,
            "verdict": self.verdict,
            "version": self.version,
            "archs": list(self.archs),
            "chosen": self.chosen,
        }


@dataclass(frozen=True)
class RemedyState:
    """What the NVRTC remedy did in this process (one object; replaced, never mutated)."""

    status: str = INACTIVE
    reason: str = "the NVRTC remedy has not run in this process"
    needed: tuple[str, ...] = ()
    """The archs it was asked to serve."""
    soname: str | None = None
    library: str | None = None
    builtins: str | None = None
    version: str | None = None
    archs: frozenset[str] = frozenset()
    """The archs the loaded library lists (served ones are ``needed`` ∩ ``archs``)."""
    origin: str | None = None
    how: str | None = None
    """``before import torch`` or ``after import torch (torch's copy released)``."""
    released: tuple[str, ...] = ()
    """torch's copies this remedy unloaded (they were never called)."""
    candidates: tuple[Candidate, ...] = ()
    handles: tuple[int, ...] = field(default=(), repr=False, compare=False)
    """The ``dlopen`` handles this remedy holds; never closed while the process runs."""

    @property
    def served(self) -> frozenset[str]:
        return frozenset(self.needed) & self.archs if self.status == SERVED else frozenset()

    def describe(self) -> str:
        """``served by the NVRTC remedy (<path>, NVRTC 12.9)`` or why not."""
        if self.status == SERVED:
            return f"served by the NVRTC remedy ({self.library}, NVRTC {self.version})"
        if self.status == AVAILABLE:
            return (
                f"the NVRTC remedy would load NVRTC {self.version} ({self.library}, "
                f"{self.origin}) at apply() before the first CUDA use, or at start-up under "
                f"`run`/{config.AUTO}=1"
            )
        return f"NVRTC remedy {self.status}: {self.reason}"

    def source(self) -> str | None:
        """``NVRTC 13.2 at <library> (the project's cache)``: the library that serves (or would),
        and where it was found; ``None`` when there is none."""
        if self.library is None or self.status not in (SERVED, AVAILABLE):
            return None
        where = (self.origin or "").split(" (", 1)[0]
        return f"NVRTC {self.version} at {self.library} ({where or 'origin unknown'})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "needed": list(self.needed),
            "soname": self.soname,
            "library": self.library,
            "builtins": self.builtins,
            "version": self.version,
            "archs": sorted(self.archs),
            "origin": self.origin,
            "how": self.how,
            "released": list(self.released),
            "candidates": [c.as_dict() for c in self.candidates],
        }


#: Serialises activate/revert (the state itself lives in :mod:`blackwell_compat.state`).
_lock = threading.RLock()


def state() -> RemedyState:
    """The remedy's state in this process."""
    current = process_state.nvrtc_remedy
    return current if isinstance(current, RemedyState) else RemedyState()


def active() -> RemedyState | None:
    """The state when a capable NVRTC serves, else ``None``."""
    current = state()
    return current if current.status == SERVED else None


def served_archs() -> frozenset[str]:
    """The archs torch's NVRTC calls reach a capable library for (cheap: no lock)."""
    return process_state.nvrtc_served_archs


def serves(arch: str) -> bool:
    """Whether GPUs of *arch* are served: torch will call a loaded NVRTC that lists it."""
    current = state()
    if current.status != SERVED or current.soname is None:
        return False

    bound = bound_library(current.soname)
    if bound is None or current.library is None or not same_file(bound, current.library):
        return False
    return config.parse_arch(arch) in current.archs


def _set(new: RemedyState) -> RemedyState:
    with process_state.lock:
        process_state.nvrtc_remedy = new
        process_state.nvrtc_served_archs = new.served
    return new


# -- facts ----------------------------------------------------------------------------------


def soname_for(cuda_major: int) -> str:
    """The name torch's LazyNVRTC opens for a build of this CUDA major."""
    return "libnvrtc.so.11.2" if cuda_major == 11 else f"libnvrtc.so.{cuda_major}"


def _torch_importing() -> bool:
    """Whether ``import torch`` is under way (in another thread, or further up this one's
    stack): the module exists but has not finished executing."""
    torch = sys.modules.get("torch")
    spec = getattr(torch, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _cuda_initialised() -> bool:
    """Whether torch has initialised CUDA here (then it may have called NVRTC already).

    No CUDA context means no NVRTC call yet: the Jiterator and the fuser ask the device first.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    cuda = getattr(torch, "cuda", None)
    check = getattr(cuda, "is_initialized", None)
    if check is None:
        return True  # cannot tell: assume the worst
    try:
        return bool(check())
    except Exception:
        return True


# -- the search -----------------------------------------------------------------------------


def _in_folder(folder: str, soname: str, major: int) -> list[str]:
    nvidia = os.path.join("nvidia", "cuda_nvrtc", "lib")
    subs = ("", "lib64", "lib", nvidia, os.path.join("nvidia", f"cu{major}", "lib"))
    return [os.path.join(folder, sub, soname) for sub in subs]


def candidate_paths(
    soname: str, major: int, env: Any = None, search_path: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """``(path, origin)`` in the documented order; files that do not exist are left out."""

    source = os.environ if env is None else env
    found: list[tuple[str, str]] = []
    explicit = config.nvrtc_from_env(source)
    if explicit is not None:
        paths = [explicit] if os.path.isfile(explicit) else _in_folder(explicit, soname, major)
        found += [(p, config.NVRTC) for p in paths]
    try:
        for folder in cache.nvrtc_dirs(major):
            found.append((os.path.join(str(folder), soname), f"the project's cache ({folder})"))
    except ValueError:
        pass
    roots: list[tuple[str, str]] = []
    given, _ = trusted.toolkit_roots(source)  # a relative one is never used (see refused_sources)
    for variable, value in given:
        if variable in ("CUDA_HOME", "CUDA_PATH"):
            roots.append((value, f"CUDA toolkit {variable}={value}"))
    roots.append(("/usr/local/cuda", "CUDA toolkit /usr/local/cuda"))
    versioned = sorted(glob.glob("/usr/local/cuda-*"), key=_toolkit_key, reverse=True)
    roots += [(root, f"CUDA toolkit {root}") for root in versioned]
    for root, origin in roots:
        for sub in ("lib64", "lib", os.path.join("targets", "*", "lib")):
            for path in sorted(glob.glob(os.path.join(root, sub, soname))):
                found.append((path, origin))
    for entry in list(sys.path if search_path is None else search_path):
        if not entry or not os.path.isabs(entry):
            continue  # never the working directory
        for sub in ("cuda_nvrtc", f"cu{major}"):
            path = os.path.join(entry, "nvidia", sub, "lib", soname)
            found.append((path, f"installed NVIDIA wheel in {entry}"))
    result: list[tuple[str, str]] = []
    seen: list[str] = []
    for path, origin in found:
        if not os.path.isfile(path):
            continue
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.append(real)
        result.append((path, origin))
    return result


def _toolkit_key(path: str) -> tuple[int, ...]:
    tail = os.path.basename(path).partition("-")[2]
    try:
        return tuple(int(part) for part in tail.split("."))
    except ValueError:
        return (-1,)


def _builtins_for(library: str, version: str) -> str | None:
    path = os.path.join(os.path.dirname(library), f"libnvrtc-builtins.so.{version}")
    return path if os.path.isfile(path) else None


def _compiles(
    path: str, arch: str, builtins: str | None, *, fresh: bool = False
) -> tuple[bool, str]:
    """Compile a tiny kernel for *arch* with *path* in a test process (the verdict is stored
    per file), its builtins library loaded first as it will be here (NVRTC 13 finds them by
    name only)."""

    entry = compile_verdict(path, arch, (builtins,) if builtins else (), retest=fresh)
    if entry is None:
        return False, "the process that tests native libraries could not be started"
    answer = entry.get("result") or {}
    if not entry.get("ok"):
        return False, f"a test process compiling with it {entry.get('what')}"
    if "error" in answer:
        return False, str(answer["error"])
    if answer.get("result") != 0:
        log = " ".join(str(answer.get("log", "")).split())
        return False, f"compiling for {arch} failed ({answer.get('result')}: {log[:200]})"
    return True, f"compiles for {arch} in a test process"


def judge(
    path: str, soname: str, needed: Sequence[str], *, source: str = "", fresh: bool = False
) -> tuple[bool, str, NvrtcInfo | None]:
    """Whether the NVRTC at *path* can serve *needed*: ``(ok, why, facts)``.  Everything the
    remedy relies on, each in a test process: the soname torch opens (read from the file),
    that it loads and lists every needed arch, that its builtins library
    (``libnvrtc-builtins.so.<version>``, next to it) exists, and that a small kernel compiles
    for each arch with that builtins library loaded first, as it will be here.  ``fetch``
    checks an unpacked wheel with this same function.  *fresh* ignores stored verdicts."""
    name = read_soname(path)
    if name != soname:
        return False, f"its soname is {name!r}, torch opens {soname!r}", None
    info = read_nvrtc(path, source=source or "given explicitly", retest=fresh)
    if not info.known:
        return False, info.error or "unreadable", None
    missing = [arch for arch in needed if arch not in info.supported_archs]
    if missing:
        return False, f"NVRTC {info.version_string} lacks {', '.join(missing)}", info
    version = info.version_string or ""
    builtins = _builtins_for(path, version)
    if builtins is None:
        wanted = f"libnvrtc-builtins.so.{version}"
        return False, f"NVRTC {version} needs {wanted} next to it, and there is none", info
    why = ""
    for arch in needed:
        ok, why = _compiles(path, arch, builtins, fresh=fresh)
        if not ok:
            return False, why, info
    return True, why, info


def find_capable(
    needed: Sequence[str],
    torch_build: TorchBuild,
    *,
    exclude: Sequence[str] = (),
    env: Any = None,
) -> tuple[Candidate | None, tuple[Candidate, ...], NvrtcInfo | None]:
    """The first candidate whose soname is torch's, that lists every needed arch and compiles
    for them in a test process; every candidate considered, with its verdict."""

    major = torch_build.cuda_major
    if major is None:
        return None, (), None
    soname = soname_for(major)
    considered: list[Candidate] = []
    source = os.environ if env is None else env
    _, refused = trusted.toolkit_roots(source)
    for why in refused:
        variable = why.split("=", 1)[0]
        if variable in ("CUDA_HOME", "CUDA_PATH"):
            considered.append(Candidate(source.get(variable, ""), f"CUDA toolkit {variable}", why))
    for path, origin in candidate_paths(soname, major, env):
        if any(same_file(path, other) for other in exclude):
            considered.append(
                Candidate(
                    path,
                    origin,
                    "torch's own NVRTC: the remedy loads another library in its place (on an "
                    "affected GPU this one lacks the arch; under emulation it counts as lacking "
                    "it)",
                )
            )
            continue
        ok, why, info = judge(path, soname, needed, source=origin)
        if ok and info is not None:
            candidate = Candidate(
                path, origin, why, info.version_string, info.supported_archs, True
            )
            considered.append(candidate)
            return candidate, tuple(considered), info
        if origin.startswith("the project's cache"):
            why += "; `python -m blackwell_compat fetch nvrtc` replaces this cached copy"
        version = info.version_string if info is not None else None
        archs = info.supported_archs if info is not None else ()
        considered.append(Candidate(path, origin, why, version, archs))
    return None, tuple(considered), None


# -- loading --------------------------------------------------------------------------------


def _release(path: str) -> tuple[bool, str]:
    """Unload *path* if, and only if, nothing but torch's never-closed preload holds it.

    One ``dlopen(RTLD_NOLOAD)`` (our reference) and two ``dlclose`` (ours, then the one
    torch's ``ctypes.CDLL`` took).  If the file is still mapped afterwards somebody else holds
    it: the dropped reference is taken back, so the library is never pulled from under them.
    """

    try:
        handle = dlopen(path, os.RTLD_NOLOAD | DLOPEN_FLAGS)
    except OSError:
        return True, f"{path} is no longer loaded"
    dlclose(handle)
    try:
        dlclose(handle)
    except OSError as exc:
        return False, f"{path} was not loaded by dlopen and cannot be released ({exc})"
    if not is_mapped(path):
        return True, f"released torch's preloaded {path}"
    try:
        dlopen(path, os.RTLD_NOLOAD | DLOPEN_FLAGS)  # take back what was dropped
    except OSError:  # pragma: no cover - it is mapped, so this succeeds
        pass
    return False, f"{path} is held by something besides torch's preload; it stays loaded"


def _restore(paths: Sequence[str]) -> None:
    """Load torch's released copies again by path, as its preload had them (they were never
    called, so this restores the state before the remedy)."""

    for path in paths:
        try:
            dlopen(path, DLOPEN_FLAGS)
        except OSError as exc:  # pragma: no cover - the file was loadable a moment ago
            logger.warning("blackwell-compat: could not load %s again: %s", path, exc)


def _load(state_in: RemedyState) -> RemedyState:
    """Load the chosen library (its builtins first) and check dlopen(soname) returns it."""

    assert state_in.library is not None and state_in.soname is not None
    handles: list[int] = []
    try:
        if state_in.builtins is not None:
            handles.append(dlopen(state_in.builtins, DLOPEN_FLAGS))
        handles.append(dlopen(state_in.library, DLOPEN_FLAGS))
    except OSError as exc:
        for handle in reversed(handles):
            dlclose(handle)
        return replace(state_in, status=FAILED, reason=f"loading {state_in.library} failed: {exc}")

    bound = bound_library(state_in.soname)
    if bound is None or not same_file(bound, state_in.library):
        for handle in reversed(handles):
            dlclose(handle)  # never called by anyone: safe to drop
        return replace(
            state_in,
            status=FAILED,
            reason=f"dlopen({state_in.soname!r}) still returns {bound}, not {state_in.library}",
        )
    return replace(
        state_in,
        status=SERVED,
        reason=f"dlopen({state_in.soname!r}) returns it, {state_in.how}",
        handles=tuple(handles),
    )


def needed_archs(platform: Platform) -> tuple[str, ...]:
    """The archs of the affected GPUs (the emulated one included)."""
    archs: list[str] = []
    for gpu in platform.gpus:
        if gpu.affected and gpu.arch and gpu.arch not in archs:
            archs.append(gpu.arch)
    return tuple(archs)


def activate(platform: Platform | None = None) -> RemedyState:
    """Serve the affected GPUs with a capable NVRTC where that can still work; never raises
    for a library problem (the state says what happened).  Idempotent."""
    with _lock:
        if state().status == SERVED:
            return state()
        try:
            return _set(_activate(platform))
        except Exception as exc:  # a remedy must never take the program down
            logger.debug("NVRTC remedy failed", exc_info=True)
            return _set(RemedyState(status=FAILED, reason=f"{type(exc).__name__}: {exc}"))


def plan(platform: Platform | None = None) -> RemedyState:
    """What :func:`activate` would do here, without loading anything into this process: the
    served state when the remedy already serves, else ``available`` (a capable library was
    found: ``library``/``version``/``origin`` name it) or why not.  For ``list``, the doctor
    and :func:`blackwell_compat.engine.ladder`; candidates are still tested in child
    processes (stored verdicts make that cheap).  Never raises."""
    with _lock:
        current = state()
        if current.status == SERVED:
            return current
        try:
            return _plan(platform)
        except Exception as exc:
            return RemedyState(status=FAILED, reason=f"{type(exc).__name__}: {exc}")


def _plan(platform: Platform | None) -> RemedyState:
    """The search part of the remedy: a final state, or ``available`` with the chosen library."""
    if not sys.platform.startswith("linux"):
        return RemedyState(status=UNSUPPORTED, reason="the NVRTC remedy works on Linux only")
    if config.nvrtc_remedy_off():
        return RemedyState(status=OFF, reason=f"{config.NVRTC}=off: torch keeps its own NVRTC")

    platform = probe() if platform is None else platform
    needed = needed_archs(platform)
    if not needed:
        return RemedyState(status=NOT_NEEDED, reason="no GPU here lacks its arch in torch's NVRTC")
    build = locate_torch()
    if build.cuda_major is None:
        why = build.describe() if build.installed else "torch is not installed"
        return RemedyState(status=NOT_NEEDED, needed=needed, reason=f"{why}: no NVRTC to replace")
    soname = soname_for(build.cuda_major)
    if _torch_importing():
        return RemedyState(
            status=TOO_LATE,
            needed=needed,
            soname=soname,
            reason=(
                "torch is still being imported (`import torch` has not finished, e.g. in "
                "another thread), so whether torch already preloaded its own NVRTC cannot be "
                "known; nothing was loaded or unloaded. Call apply() before `import torch` "
                "starts, or after it finished (before the first CUDA use), or use "
                f"`python -m blackwell_compat run` or {config.AUTO}=1; the patches serve "
                "meanwhile"
            ),
        )
    if "torch" in sys.modules and _cuda_initialised():
        return RemedyState(
            status=TOO_LATE,
            needed=needed,
            soname=soname,
            reason=(
                "CUDA is already initialised in this process, so torch may have bound its own "
                "NVRTC; nothing was loaded or unloaded. Use `python -m blackwell_compat run`, "
                f"{config.AUTO}=1, or call apply() before the first CUDA use; the patches "
                "serve meanwhile"
            ),
        )
    own = find_nvrtc(torch=build, in_process=False, read=False).path
    chosen, considered, info = find_capable(needed, build, exclude=[own] if own else [])
    base = RemedyState(needed=needed, soname=soname, candidates=considered)
    if chosen is None or info is None:
        tried = "; ".join(f"{c.path}: {c.verdict}" for c in considered) or "no candidate found"
        return replace(
            base,
            status=UNAVAILABLE,
            reason=(
                f"no NVRTC with soname {soname} that lists {', '.join(needed)} "
                f"(looked in {', '.join(SOURCE_ORDER)}; {tried}); "
                "`python -m blackwell_compat fetch nvrtc` puts one in the cache"
            ),
        )
    version = info.version_string or ""
    builtins = _builtins_for(chosen.path, version)
    return replace(
        base,
        status=AVAILABLE,
        reason=f"NVRTC {version} at {chosen.path} ({chosen.origin}) lists {', '.join(needed)}",
        library=chosen.path,
        builtins=builtins,
        version=version,
        archs=frozenset(info.supported_archs),
        origin=chosen.origin,
    )


def _activate(platform: Platform | None) -> RemedyState:
    state_in = _plan(platform)
    if state_in.status != AVAILABLE or state_in.library is None or state_in.soname is None:
        return state_in
    soname, builtins = state_in.soname, state_in.builtins
    chosen_path = state_in.library
    bound = bound_library(soname)
    if bound is not None and same_file(bound, chosen_path):
        done = replace(state_in, status=SERVED, how="it was already loaded in this process")
        done = replace(done, reason=f"dlopen({soname!r}) returns it, {done.how}")
        forget()
        return done
    released: list[str] = []
    if "torch" not in sys.modules:
        if bound is not None:
            return replace(
                state_in,
                status=FAILED,
                reason=(
                    f"{bound} (soname {soname}) was loaded into this process before torch by "
                    "someone else; it is left alone"
                ),
            )
        state_in = replace(state_in, how="loaded before torch was imported")
    else:
        # Only torch's own preloaded copies (files in torch's NVRTC folder) are ever released:
        # a library the program loaded itself may have a single reference, which the two
        # dlclose of _release would drop from under it.
        own = find_nvrtc(torch=locate_torch(), in_process=False, read=False).path
        own_dir = os.path.dirname(os.path.realpath(own)) if own else None

        def not_torchs(path: str) -> RemedyState | None:
            if own_dir is not None and os.path.dirname(os.path.realpath(path)) == own_dir:
                return None
            _restore(released)
            return replace(
                state_in,
                status=FAILED,
                reason=(
                    f"{path} is loaded in this process and is not torch's own NVRTC ({own}); "
                    "a library someone else loaded is left alone, so torch keeps what "
                    "dlopen returns now; nothing changed"
                ),
            )

        linking = linked_by(soname)
        if linking:
            return replace(
                state_in,
                status=FAILED,
                reason=(
                    f"{', '.join(linking)} links {soname} directly, so torch's NVRTC stays "
                    "loaded once torch is imported; nothing changed. Start the program with "
                    f"`python -m blackwell_compat run` or {config.AUTO}=1, or call apply() "
                    "before `import torch`"
                ),
            )
        same = os.path.basename(builtins) if builtins else None
        others = [p for p in mapped_files("libnvrtc-builtins.so.") if os.path.basename(p) == same]
        for path in [p for p in others if not (builtins and same_file(p, builtins))]:
            refused = not_torchs(path)
            if refused is not None:
                return refused
            ok, why = _release(path)
            if not ok:
                return replace(state_in, status=FAILED, reason=why)
            released.append(path)
        while bound is not None:
            refused = not_torchs(bound)
            if refused is not None:
                return refused
            ok, why = _release(bound)
            if not ok:
                _restore(released)  # torch's NVRTC stays: so must the builtins it needs
                return replace(state_in, status=FAILED, reason=f"{why}; nothing changed")
            released.append(bound)
            bound = bound_library(soname)
        state_in = replace(
            state_in,
            released=tuple(released),
            how=(
                "loaded after `import torch` (CUDA not initialised), torch's preloaded copy "
                "released first"
                if released
                else "loaded after `import torch` (CUDA not initialised)"
            ),
        )
    result = _load(state_in)
    if result.status != SERVED:
        _restore(released)
        result = replace(result, released=())
    forget()
    return result


def revert() -> list[str]:
    """What cannot be undone: a loaded capable NVRTC stays (torch may have bound it, and
    unloading a library something may call is never safe).  The remedy state is kept."""
    current = state()
    if current.status != SERVED:
        return []
    return [
        f"NVRTC {current.version} at {current.library} stays loaded: torch may already use it; "
        "a new process starts without it"
    ]
