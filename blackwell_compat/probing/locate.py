"""Which NVRTC library torch would load, found without importing torch.

The search follows what torch and the dynamic loader do (see docs/concepts.md):

1. If torch is already imported and the library is mapped into this process, that file wins.
2. torch's preload (``torch/__init__.py``, Linux): for each ``sys.path`` entry in order, glob
   ``nvidia/cuda_nvrtc/lib/libnvrtc.so.*[0-9]``, then ``nvidia/cu<major>/lib/...`` (CUDA 13+
   builds), then ``cuda_nvrtc/lib/...``; the first match of the first entry with any match is
   loaded by path.  It counts only if its soname major is the one torch links against
   (``libnvrtc.so.13`` for a CUDA 13 build): a stray ``libnvrtc.so.12`` preloaded next to a CUDA
   13 torch is never called.
3. The dynamic loader, for the soname torch links against: torch's RPATH folders (the
   ``nvidia/...`` folders next to torch, then ``torch/lib``), ``LD_LIBRARY_PATH``, the ld.so
   cache (``ldconfig -p``).
4. A system CUDA the loader does not search by itself: ``CUDA_HOME``, ``CUDA_PATH``,
   ``/usr/local/cuda/lib64``.  A library found only here is reported with that caveat.

On Windows torch loads ``nvrtc64_<major><minor>_0.dll`` from ``torch/lib`` (wheels bundle it),
else from the CUDA toolkit's ``bin`` folder (``CUDA_PATH_V<major>_<minor>``, ``CUDA_PATH``) or
``PATH``.

Every candidate considered is recorded with a note saying why it won or was passed over.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import children
from ..loader import bound_library, mapped_files, same_file
from .isolation import read_nvrtc
from .nvrtc import NvrtcCandidate, NvrtcInfo

__all__ = [
    "TorchBuild",
    "find_nvrtc",
    "find_nvrtc_candidates",
    "is_working_directory",
    "locate_torch",
    "parse_version_py",
]

_CUDA_RE = re.compile(r"""^cuda\s*(?::[^=]*)?=\s*(?:'([^']*)'|"([^"]*)"|None)""", re.M)
_VERSION_RE = re.compile(r"""^__version__\s*(?::[^=]*)?=\s*(?:'([^']*)'|"([^"]*)")""", re.M)


@dataclass(frozen=True)
class TorchBuild:
    """Where torch is installed and which CUDA it was built for, read from its files."""

    location: str | None = None
    """The ``torch`` package folder, or ``None`` when torch is not installed."""
    version: str | None = None
    cuda: str | None = None
    """``torch.version.cuda`` (``"13.0"``), ``None`` for a CPU-only build or when unknown."""
    error: str | None = None

    @property
    def installed(self) -> bool:
        return self.location is not None

    @property
    def cuda_major(self) -> int | None:
        if not self.cuda:
            return None
        head = self.cuda.split(".")[0]
        return int(head) if head.isdigit() else None

    @property
    def cuda_minor(self) -> int | None:
        parts = (self.cuda or "").split(".")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    def describe(self) -> str:
        if not self.installed:
            return "torch is not installed"
        shown = f"torch {self.version}" if self.version else "torch (version unknown)"
        if self.error:
            return f"{shown} at {self.location} ({self.error})"
        if self.cuda is None:
            return f"{shown} is a CPU-only build"
        return f"{shown} built for CUDA {self.cuda}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "version": self.version,
            "cuda": self.cuda,
            "error": self.error,
        }


def parse_version_py(text: str) -> tuple[str | None, str | None, bool]:
    """``(version, cuda, cuda_line_found)`` from the text of ``torch/version.py``."""
    version_match = _VERSION_RE.search(text)
    version = None
    if version_match:
        version = version_match.group(1) if version_match.group(1) is not None else None
        version = version if version is not None else version_match.group(2)
    cuda_match = _CUDA_RE.search(text)
    if not cuda_match:
        return version, None, False
    cuda = cuda_match.group(1) if cuda_match.group(1) is not None else cuda_match.group(2)
    return version, cuda or None, True


def locate_torch(search_path: Sequence[str] | None = None) -> TorchBuild:
    """Find the torch package on *search_path* (default ``sys.path``) without importing it."""
    import importlib.machinery
    import importlib.util

    try:
        if search_path is None:
            spec = importlib.util.find_spec("torch")
        else:
            spec = importlib.machinery.PathFinder.find_spec("torch", list(search_path))
    except (ImportError, ValueError) as exc:
        return TorchBuild(error=f"looking for torch failed: {exc}")
    if spec is None or not spec.submodule_search_locations:
        return TorchBuild()
    location = (
        os.path.dirname(spec.origin)
        if spec.origin and spec.origin != "namespace"
        else next(iter(spec.submodule_search_locations))
    )
    version_file = os.path.join(location, "version.py")
    try:
        with open(version_file, encoding="utf-8", errors="replace") as handle:
            text = handle.read(64 * 1024)
    except OSError as exc:
        return TorchBuild(location=location, error=f"cannot read {version_file}: {exc}")
    version, cuda, found = parse_version_py(text)
    error = None if found else f"{version_file} has no 'cuda = ...' line"
    return TorchBuild(location=location, version=version, cuda=cuda, error=error)


# -- the search --------------------------------------------------------------------------------


def _soname_major(path: str) -> int | None:
    """``libnvrtc.so.13`` -> 13, ``nvrtc64_120_0.dll`` -> 12, else ``None``."""
    name = os.path.basename(path)
    match = re.match(r"libnvrtc\.so\.(\d+)", name)
    if match:
        return int(match.group(1))
    match = re.match(r"nvrtc64_(\d+?)(\d)_\d+\.dll$", name, re.I)
    if match:
        return int(match.group(1))
    return None


def _loaded_nvrtc() -> list[str]:
    """NVRTC libraries mapped into this process (Linux only)."""
    return mapped_files("libnvrtc.so.")


def is_working_directory(entry: str) -> bool:
    """Whether a ``sys.path`` entry is the working directory (``''`` or the cwd itself)."""
    if entry == "":
        return True
    try:
        return os.path.realpath(entry) == os.path.realpath(os.getcwd())
    except OSError:
        return False


def _running_as_cli() -> bool:
    """Whether this process is ``python -m blackwell_compat`` (which put the cwd on sys.path
    where the user's own programs would not have it)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", "") or ""
    return name == "blackwell_compat" or name.startswith("blackwell_compat.")


def _ldconfig_paths(pattern: str) -> list[str]:
    """Paths the ld.so cache holds for library names matching *pattern* (a regex)."""
    for tool in ("/sbin/ldconfig", "/usr/sbin/ldconfig"):
        if not os.path.exists(tool):
            continue
        outcome = children.run([tool, "-p"], timeout=5)
        if not outcome.started:
            continue
        found = []
        for line in outcome.stdout_text.splitlines():
            name, sep, path = line.strip().partition(" => ")
            if sep and re.fullmatch(pattern, name.split(" ", 1)[0]):
                found.append(path.strip())
        return found
    return []


class _Search:
    """Collects candidates in order; the first acceptable one wins."""

    def __init__(self) -> None:
        self.candidates: list[NvrtcCandidate] = []
        self.winner: NvrtcCandidate | None = None

    def offer(
        self,
        path: str,
        origin: str,
        *,
        accept: bool = True,
        note: str = "",
        working_directory: bool = False,
    ) -> bool:
        exists = os.path.isfile(path)
        cwd = working_directory
        if self.winner is not None:
            if not exists or path == self.winner.path:
                return False  # only real alternatives are worth listing once decided
            self.candidates.append(
                NvrtcCandidate(
                    path,
                    origin,
                    exists,
                    note=note or "an earlier candidate wins",
                    working_directory=cwd,
                )
            )
            return False
        if not exists:
            self.candidates.append(
                NvrtcCandidate(path, origin, False, note="no such file", working_directory=cwd)
            )
            return False
        if not accept:
            self.candidates.append(
                NvrtcCandidate(path, origin, True, note=note, working_directory=cwd)
            )
            return False
        candidate = NvrtcCandidate(
            path, origin, True, chosen=True, note=note, working_directory=cwd
        )
        self.candidates.append(candidate)
        self.winner = candidate
        return True


def _linux_search(
    search: _Search,
    search_path: Sequence[str],
    torch: TorchBuild,
    env: Mapping[str, str],
    in_process: bool,
) -> None:
    major = torch.cuda_major
    wanted = f"libnvrtc.so.{major}" if major is not None else None
    pattern = "libnvrtc.so.*[0-9]"

    def matches(path: str) -> bool:
        return major is None or _soname_major(path) == major

    if in_process and wanted is not None:
        # Issue 12: what dlopen(soname) returns now, torch imported or not (the NVRTC remedy
        # loads a capable library before torch's own).
        bound = bound_library(wanted)
        if bound is not None:
            search.offer(
                bound,
                "already loaded in this process",
                note=f"dlopen({wanted!r}), as torch's LazyNVRTC does, returns this library",
            )
    if in_process and "torch" in sys.modules:
        for path in _loaded_nvrtc():
            search.offer(
                path,
                "already loaded in this process",
                accept=matches(path),
                note=(
                    "mapped into this process: this is the library torch calls"
                    if matches(path)
                    else f"mapped, but torch links {wanted}"
                ),
            )

    if not torch.installed or torch.cuda is not None:
        # torch's preload: first sys.path entry with any match, first match in it.  Without
        # torch this still shows what a CUDA torch installed here would preload.  An entry
        # that is the working directory ('' under ``python -c``/the REPL, the cwd under
        # ``python -m``) is searched as torch would, flagged, and never loaded by the probe.
        cli = _running_as_cli()
        for position, entry in enumerate(search_path):
            in_cwd = is_working_directory(entry)
            if not os.path.isdir(entry or "."):
                continue
            found: list[str] = []
            for folder in (
                os.path.join(entry, "nvidia", "cuda_nvrtc", "lib"),
                *(
                    [os.path.join(entry, "nvidia", f"cu{major}", "lib")]
                    if major is not None
                    else []
                ),
                os.path.join(entry, "cuda_nvrtc", "lib"),
            ):
                found.extend(sorted(glob.glob(os.path.join(folder, pattern))))
            if not found:
                continue
            origin = f"torch preload: sys.path[{position}] {entry or repr(entry)}"
            first, rest = found[0], found[1:]
            if in_cwd:
                origin += " (the working directory)"
                found = [os.path.abspath(p) for p in found]
                first, rest = found[0], found[1:]
            if in_cwd and cli and position == 0:
                for path in found:
                    search.offer(
                        path,
                        origin,
                        accept=False,
                        working_directory=True,
                        note=(
                            "left out: `python -m blackwell_compat` put the working directory "
                            "on sys.path, your programs' interpreters need not; never loaded"
                        ),
                    )
                continue
            if in_cwd and matches(first):
                search.offer(
                    first,
                    origin,
                    working_directory=True,
                    note=(
                        "torch in this interpreter would preload it from the working directory "
                        "(it is on sys.path); the probe reports it but does not load it"
                    ),
                )
                for path in rest:
                    search.offer(
                        path,
                        origin,
                        accept=False,
                        working_directory=True,
                        note="torch preloads only the first match",
                    )
                break
            if matches(first):
                search.offer(
                    first,
                    origin,
                    note=(
                        f"{torch.describe()}: torch/__init__.py preloads it by path at import"
                        if torch.installed
                        else "torch is not installed; a CUDA torch installed here would "
                        "preload this one"
                    ),
                )
            else:
                search.offer(
                    first,
                    origin,
                    accept=False,
                    note=(
                        f"torch preloads it, but {torch.describe()} links {wanted}: "
                        "never called, the loader keeps looking"
                    ),
                )
            for path in rest:
                search.offer(path, origin, accept=False, note="torch preloads only the first match")
            break

    names = [wanted] if wanted else []

    def offer_folder(folder: str, origin: str, note: str) -> None:
        if names:
            search.offer(os.path.join(folder, names[0]), origin, note=note)
            return
        found = sorted(glob.glob(os.path.join(folder, pattern)))
        for path in found:
            search.offer(path, origin, note=note)

    if torch.installed and torch.location is not None:
        site = os.path.dirname(torch.location)
        folders = []
        if major is not None:
            folders.append(os.path.join(site, "nvidia", f"cu{major}", "lib"))
        folders.append(os.path.join(site, "nvidia", "cuda_nvrtc", "lib"))
        folders.append(os.path.join(torch.location, "lib"))
        for folder in folders:
            offer_folder(
                folder,
                "dynamic loader: torch's RPATH",
                "found by the loader through torch's RPATH",
            )

    for folder in env.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        if folder and not os.path.isabs(folder):
            # The loader resolves it against the working directory: report, never load.
            for path in sorted(glob.glob(os.path.join(folder, wanted or pattern))):
                search.offer(
                    os.path.abspath(path),
                    f"dynamic loader: LD_LIBRARY_PATH entry {folder!r} (the working directory)",
                    working_directory=True,
                    note=(
                        "a relative LD_LIBRARY_PATH entry: the loader would take it from the "
                        "working directory; the probe reports it but does not load it"
                    ),
                )
        elif folder:
            offer_folder(folder, "dynamic loader: LD_LIBRARY_PATH", "found through LD_LIBRARY_PATH")

    if search.winner is None:
        regex = re.escape(wanted) if wanted else r"libnvrtc\.so\.\d+"
        for path in _ldconfig_paths(regex):
            search.offer(path, "dynamic loader: ld.so cache", note="found in the ld.so cache")

    caveat = (
        "system CUDA; the loader does not search this folder unless LD_LIBRARY_PATH or the "
        "ld.so cache names it"
    )
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        root = env.get(variable, "")
        if root and not os.path.isabs(root):
            # A relative toolkit folder names the working directory: report, never load.
            for path in sorted(glob.glob(os.path.join(root, "lib64", wanted or pattern))):
                search.offer(
                    os.path.abspath(path),
                    f"{variable}={root!r} (a relative path: the working directory)",
                    accept=False,
                    working_directory=True,
                    note="a relative CUDA toolkit folder is never used",
                )
        elif root:
            offer_folder(os.path.join(root, "lib64"), f"{variable}={root}", caveat)
    offer_folder("/usr/local/cuda/lib64", "default CUDA toolkit folder", caveat)


def _windows_search(
    search: _Search, search_path: Sequence[str], torch: TorchBuild, env: Mapping[str, str]
) -> None:
    major, minor = torch.cuda_major, torch.cuda_minor
    pattern = f"nvrtc64_{major}*_0.dll" if major is not None else "nvrtc64_*.dll"

    def offer_folder(folder: str, origin: str, note: str) -> None:
        for path in sorted(glob.glob(os.path.join(folder, pattern))):
            search.offer(path, origin, note=note)

    if torch.installed and torch.location is not None:
        offer_folder(
            os.path.join(torch.location, "lib"),
            "torch/lib",
            "bundled with torch; torch adds torch/lib to the DLL search path",
        )
        site = os.path.dirname(torch.location)
        for sub in ("cuda_nvrtc", f"cu{major}" if major is not None else "cu*"):
            for folder in sorted(glob.glob(os.path.join(site, "nvidia", sub, "bin"))):
                offer_folder(folder, "nvidia wheel", "installed by an nvidia-* wheel")
                offer_folder(
                    os.path.join(folder, "x86_64"), "nvidia wheel", "installed by an nvidia-* wheel"
                )
    for entry in search_path:
        if entry and os.path.isdir(os.path.join(entry, "nvidia")) and torch.location is None:
            offer_folder(
                os.path.join(entry, "nvidia", "cuda_nvrtc", "bin"),
                f"sys.path entry {entry}",
                "installed by an nvidia-* wheel",
            )
    variables = []
    if major is not None and minor is not None:
        variables.append(f"CUDA_PATH_V{major}_{minor}")
    variables.append("CUDA_PATH")
    for variable in variables:
        root = env.get(variable, "")
        if root:
            for sub in ("bin", os.path.join("bin", "x64")):
                offer_folder(os.path.join(root, sub), f"{variable}={root}", "CUDA toolkit")
    for folder in env.get("PATH", "").split(os.pathsep):
        if folder:
            offer_folder(folder, "PATH", "found through PATH")


def find_nvrtc_candidates(
    search_path: Sequence[str] | None = None,
    *,
    torch: TorchBuild | None = None,
    env: Mapping[str, str] | None = None,
    system: str | None = None,
    in_process: bool | None = None,
) -> tuple[tuple[NvrtcCandidate, ...], NvrtcCandidate | None]:
    """Every candidate considered, in order, and the winner (or ``None``)."""
    explicit = search_path is not None
    paths = list(search_path) if search_path is not None else list(sys.path)
    build = torch if torch is not None else locate_torch(paths if explicit else None)
    environment = os.environ if env is None else env
    kind = system or sys.platform
    search = _Search()
    if kind == "win32":
        _windows_search(search, paths, build, environment)
    else:
        check_process = (not explicit) if in_process is None else in_process
        _linux_search(search, paths, build, environment, check_process)
    return tuple(search.candidates), search.winner


def find_nvrtc(
    search_path: Sequence[str] | None = None,
    *,
    torch: TorchBuild | None = None,
    env: Mapping[str, str] | None = None,
    system: str | None = None,
    in_process: bool | None = None,
    read: bool = True,
    retest: bool = False,
    timeout: float | None = None,
) -> NvrtcInfo:
    """The NVRTC torch would load, read in a test process (never raises).

    *search_path* stands for ``sys.path`` of the environment to inspect (default: this
    interpreter's, which also checks the libraries already mapped into this process).  A
    library found through the working directory is reported, never read.
    """
    paths = list(search_path) if search_path is not None else None
    build = torch if torch is not None else locate_torch(paths)
    try:
        candidates, winner = find_nvrtc_candidates(
            paths, torch=build, env=env, system=system, in_process=in_process
        )
    except Exception as exc:  # pragma: no cover - defensive; the search only reads files
        return NvrtcInfo(source=build.describe(), error=f"searching for NVRTC failed: {exc!r}")
    if winner is None:
        if build.installed and build.cuda is None and build.error is None:
            why = f"{build.describe()}: it loads no NVRTC, and no NVRTC library was found"
        else:
            why = f"no NVRTC library found ({build.describe()})"
        return NvrtcInfo(source=why, candidates=candidates, error=why)
    source = f"{winner.origin}: {winner.note}" if winner.note else winner.origin
    if build.installed and build.cuda is None and build.error is None:
        source += f" ({build.describe()}: torch itself will not load it)"
    if not read:
        return NvrtcInfo(path=winner.path, source=source, candidates=candidates)
    if winner.working_directory:
        return NvrtcInfo(
            path=winner.path,
            source=source,
            candidates=candidates,
            error=(
                f"not read: {winner.path} lies in the working directory, and blackwell-compat "
                "loads nothing from there (run your program from another folder, or take the "
                "working directory off sys.path, e.g. with `python -P`)"
            ),
        )
    info = read_nvrtc(winner.path, source=source, retest=retest, timeout=timeout)
    replaces = None
    if winner.origin == "already loaded in this process":  # issue 12: the remedy's library
        _, own = find_nvrtc_candidates(paths, torch=build, env=env, system=system, in_process=False)
        if own is not None and not same_file(own.path, winner.path):
            replaces = own.path
    return NvrtcInfo(
        replaces=replaces,
        path=info.path,
        version=info.version,
        supported_archs=info.supported_archs,
        source=source,
        candidates=candidates,
        error=info.error,
        crash=info.crash,
    )
