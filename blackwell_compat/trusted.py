"""What the library may load or run: folders the user owns, files read safely, absolute paths.

blackwell-compat loads native compilers into the user's process and runs tools at start-up, so
everything it takes from the file system must be under the user's control (docs/remedies.md,
"Trust"):

- **folders** (its caches): used only if this uid or root owns them and nobody else can write
  to them, every link resolved and every folder above them checked the same way (a folder
  others can write to is fine above only with the sticky bit, as ``/tmp``);
  :func:`cache_folders` picks the cache, with a private fallback (mode 0700, this uid's) when
  the configured one is refused or there is no usable home;
- **files** read from a cache (:func:`read_file`): opened without following links and without
  blocking, a regular file, size-limited; a FIFO, a device, a link or a huge file is an error,
  never a hang;
- **paths from the environment**: ``BLACKWELL_COMPAT_CACHE_DIR``, ``BLACKWELL_COMPAT_NVRTC``
  and ``BLACKWELL_COMPAT_PTXAS`` must be absolute (a relative one names a different file in
  every working directory: :func:`blackwell_compat.config.absolute_path` refuses it with a
  ``ConfigError``);
  ``CUDA_HOME``, ``CUDA_PATH``, ``CUDA_ROOT`` that are relative are not used
  (:func:`toolkit_roots` says why); tools are found only through absolute ``PATH`` entries
  (:func:`find_tool`).

A leaf above ``config``.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import config
from .errors import ConfigError, logger

__all__ = [
    "TOOLKIT_VARIABLES",
    "CacheFolders",
    "FileRefused",
    "cache_folders",
    "configured_cache",
    "fallback_cache",
    "find_tool",
    "folder_problem",
    "make_private_folder",
    "read_file",
    "regular_files",
    "toolkit_roots",
]

#: CUDA toolkit variables the library looks in (never when relative).
TOOLKIT_VARIABLES = ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT")

_warned: set[str] = set()  # refusals already logged in this process (one warning each)


class FileRefused(OSError):
    """A file the library will not read: a link, not a regular file, or too big."""


# -- paths from the environment ---------------------------------------------------------------


def toolkit_roots(env: Mapping[str, str] | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    """``([(variable, folder)], [why each relative one is not used])`` for the CUDA toolkit
    variables that are set."""
    source = os.environ if env is None else env
    roots: list[tuple[str, str]] = []
    refused: list[str] = []
    for name in TOOLKIT_VARIABLES:
        value = source.get(name, "").strip()
        if not value:
            continue
        if os.path.isabs(value):
            roots.append((name, value))
        else:
            refused.append(
                f"{name}={value!r} is a relative path: not used (it would name a different "
                "folder in every working directory)"
            )
    return roots, refused


def find_tool(name: str, search: str | None = None) -> str | None:
    """The first executable *name* in the absolute entries of *search* (default ``PATH``):
    an empty or relative entry would mean the working directory, and is skipped."""
    value = os.environ.get("PATH", "") if search is None else search
    for entry in value.split(os.pathsep):
        if not entry or not os.path.isabs(entry):
            continue
        candidate = os.path.join(entry, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# -- folders ----------------------------------------------------------------------------------


def _private_group(st: os.stat_result) -> bool:
    """Whether the folder's group is this user's own group with nobody else in it (user
    private groups, where ``umask 002`` makes folders group-writable)."""
    if not hasattr(os, "getgid") or st.st_gid != os.getgid():
        return False
    try:  # Unix-only modules of the standard library: imported where they are used
        import grp
        import pwd

        members = set(grp.getgrgid(st.st_gid).gr_mem)
        me = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError, OSError):
        return False
    return members <= {me}


def _writable_by_others(st: os.stat_result, *, above: bool) -> bool:
    if above and st.st_mode & stat.S_ISVTX:
        return False  # sticky (/tmp): others cannot move or replace what this user made
    if st.st_mode & stat.S_IWOTH:
        return True
    return bool(st.st_mode & stat.S_IWGRP) and not _private_group(st)


def folder_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why *folder* (links resolved) may not hold what the library loads or trusts, or
    ``None`` when it may: it and every folder above it belong to this uid or root, and nobody
    else can write to them (above it, a sticky folder such as ``/tmp`` is fine).  A folder that
    does not exist is judged by the nearest one that does (where it would be created)."""
    if not hasattr(os, "getuid"):
        return None  # Windows: the user's profile folders; no POSIX owners to compare
    uid = os.getuid()
    path = os.path.realpath(os.fspath(folder))
    shown = os.fspath(folder)
    if path != os.path.abspath(shown):
        shown = f"{shown} (-> {path})"
    current, first = path, True
    while True:
        try:
            st = os.stat(current)
        except FileNotFoundError:
            parent = os.path.dirname(current)
            if parent == current:
                return None
            current, first = parent, False
            continue
        except OSError as exc:
            return f"{current} cannot be read ({exc.strerror or exc})"
        if not stat.S_ISDIR(st.st_mode):
            return f"{current} is not a folder"
        if st.st_uid not in (uid, 0):
            return (
                f"{shown} is not this user's: {current} belongs to uid {st.st_uid} (this is "
                f"uid {uid})"
            )
        if _writable_by_others(st, above=not (first and current == path)):
            return (
                f"{shown} can be written by other users: {current} has mode "
                f"{stat.S_IMODE(st.st_mode):04o}"
            )
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current, first = parent, False


def make_private_folder(folder: str | os.PathLike[str]) -> Path:
    """Create *folder* and any missing folder above it with mode 0700; ``OSError`` when that
    fails or the result is not trusted (:func:`folder_problem`).  The resolved path."""
    path = os.path.realpath(os.fspath(folder))
    missing: list[str] = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for item in reversed(missing):
        try:
            os.mkdir(item, 0o700)
        except FileExistsError:
            pass
    problem = folder_problem(path)
    if problem is not None:
        raise PermissionError(errno.EACCES, problem)
    return Path(path)


# -- the cache --------------------------------------------------------------------------------


def _home(env: Mapping[str, str]) -> str | None:
    """The home folder, when there is a usable one (absolute; ``None`` without: a container
    started with an arbitrary uid and no ``HOME``)."""
    home = env.get("HOME", "").strip()
    if not home:
        try:  # Unix-only (see _private_group)
            import pwd

            home = pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError, OSError, AttributeError):
            home = ""
    if sys.platform == "win32" and not home:
        home = env.get("USERPROFILE", "")
    return home if home and os.path.isabs(home) else None


def configured_cache(env: Mapping[str, str] | None = None) -> tuple[Path | None, str | None]:
    """``(folder, None)``: the cache folder the environment asks for
    (``BLACKWELL_COMPAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/blackwell-compat``, else
    ``~/.cache/blackwell-compat``; ``%LOCALAPPDATA%\\blackwell-compat\\cache`` on Windows),
    nothing checked; ``(None, why)`` when there is none (a relative variable, no home)."""
    source = os.environ if env is None else env
    try:
        explicit = config.absolute_path(config.CACHE_DIR, source)
    except ConfigError as exc:
        return None, str(exc)
    if explicit is not None:
        return Path(explicit), None
    if sys.platform == "win32":
        base = source.get("LOCALAPPDATA", "")
        if base and os.path.isabs(base):
            return Path(base) / "blackwell-compat" / "cache", None
    xdg = source.get("XDG_CACHE_HOME", "").strip()
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "blackwell-compat", None
    home = _home(source)
    if home is None:
        return None, "there is no usable home folder (HOME unset or relative, no passwd entry)"
    return Path(home) / ".cache" / "blackwell-compat", None


def fallback_cache() -> Path | None:
    """The private fallback: ``<tmp>/blackwell-compat-<uid>``, a folder only this uid can
    enter (mode 0700), never one folder for every user; ``None`` where there is no temporary
    folder or no uid."""
    if not hasattr(os, "getuid"):
        return None
    try:
        base = tempfile.gettempdir()
    except (OSError, RuntimeError):
        return None
    return Path(base) / f"blackwell-compat-{os.getuid()}"


@dataclass(frozen=True)
class CacheFolders:
    """The cache folders the library may use, best first, and the ones it refused."""

    usable: tuple[Path, ...]
    """Trusted (or creatable as trusted) folders, the configured one first."""
    refused: tuple[str, ...]
    """Why a folder was refused, one line each."""

    @property
    def preferred(self) -> Path | None:
        return self.usable[0] if self.usable else None


def _usable(folder: Path) -> str | None:
    problem = folder_problem(folder)
    if problem is not None:
        return problem
    if folder.exists() and not folder.is_dir():
        return f"{folder} is not a folder"
    return None


def cache_folders(env: Mapping[str, str] | None = None) -> CacheFolders:
    """The configured cache when it may be used (see :func:`folder_problem`), then the
    private fallback (when it is not refused too).  A refusal is logged once per process."""
    configured, why = configured_cache(env)
    usable: list[Path] = []
    refused: list[str] = []
    if configured is not None:
        problem = _usable(configured)
        if problem is None:
            usable.append(Path(os.path.realpath(configured)))
        else:
            refused.append(f"the cache folder {configured} is refused: {problem}")
    elif why is not None:
        refused.append(f"no cache folder is configured: {why}")
    fallback = fallback_cache()
    if fallback is not None:
        problem = _usable(fallback)
        if problem is None:
            real = Path(os.path.realpath(fallback))
            if real not in usable:
                usable.append(real)
        else:
            refused.append(f"the private fallback {fallback} is refused: {problem}")
    for line in refused:
        if line not in _warned and "no usable home" not in line:  # no home: said in the docs
            _warned.add(line)
            logger.warning("blackwell-compat: %s; using %s", line, usable[0] if usable else "none")
    return CacheFolders(tuple(usable), tuple(refused))


# -- files ------------------------------------------------------------------------------------


def read_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file at *path*, at most *limit* of them.

    Opened without following a link and without blocking (a FIFO never hangs the reader);
    raises :class:`FileRefused` for a link, anything but a regular file or a file larger than
    *limit*, ``OSError`` when it cannot be read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileRefused(errno.ELOOP, f"{path} is a link; the library follows none") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(errno.EINVAL, f"{path} is not a regular file")
        if st.st_size > limit:
            raise FileRefused(errno.EFBIG, f"{path} is {st.st_size} bytes, more than {limit}")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(errno.EFBIG, f"{path} grew past {limit} bytes while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def regular_files(folder: Path, names: Sequence[str]) -> str | None:
    """Why one of *names* in *folder* is not a regular file of its own (a link, a folder,
    missing), or ``None`` when all are."""
    for name in names:
        path = folder / name
        try:
            st = os.lstat(path)
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
        if not stat.S_ISREG(st.st_mode):
            return f"{path} is not a regular file (a link or a folder)"
    return None
