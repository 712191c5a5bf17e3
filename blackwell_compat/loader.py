"""What the dynamic loader has done in this process, and what an ELF file asks of it.

The NVRTC remedy, the probe and the doctor all need the same few facts about the dynamic
loader (Linux, glibc); they live here, once, read without loading anything new:

- :func:`mapped_files`: the files mapped into this process (``/proc/self/maps``, the kernel's
  octal escapes undone where they hide a real name);
- :func:`bound_library`: the file ``dlopen(soname)`` returns now (``RTLD_NOLOAD``);
- :func:`same_file`: whether two paths name one file, with one rule for paths that cannot be
  read;
- :func:`read_soname` / :func:`read_needed`: ``DT_SONAME`` and ``DT_NEEDED`` of an ELF file,
  read from the file; :func:`linked_by`: the mapped libraries that link a soname;
- :data:`DLOPEN_FLAGS`, :func:`dlopen`, :func:`dlclose`: how the library loads what it loads.

A leaf: it imports nothing of the package.
"""

from __future__ import annotations

import _ctypes
import ctypes
import os
import stat
import struct
import sys
from typing import Any

__all__ = [
    "DLOPEN_FLAGS",
    "bound_library",
    "dlclose",
    "dlopen",
    "is_mapped",
    "linked_by",
    "loaded_path",
    "mapped_files",
    "read_needed",
    "read_soname",
    "same_file",
]

#: ``RTLD_LOCAL | RTLD_NOW``: symbols stay private to the library, and every symbol is bound
#: at load time, so a library with a missing dependency fails at ``dlopen``, not mid-call.
DLOPEN_FLAGS: int = int(getattr(os, "RTLD_LOCAL", 0) | getattr(os, "RTLD_NOW", 2))

_MAPS = "/proc/self/maps"
_MAPS_LIMIT = 64 << 20  # a process with this much mapping text is no process we know
_DT_NEEDED, _DT_SONAME = 1, 14
_ESCAPED_NEWLINE = "\\012"  # how the kernel writes a newline of a file name in the maps


def same_file(first: str, second: str) -> bool:
    """Whether two paths name one file.

    Both readable: the same device and inode (``os.path.samefile``).  Either one not readable
    (vanished, no permission): the same name once every link that can be resolved is
    (``os.path.realpath``), never "different" only because one of them could not be read.
    """
    try:
        return os.path.samefile(first, second)
    except (OSError, ValueError):
        try:
            return os.path.realpath(first) == os.path.realpath(second)
        except (OSError, ValueError):
            return first == second


def _unescape(path: str) -> str:
    """The real name behind the kernel's ``\\012`` (a newline in a file name), when the name as
    written does not exist and the unescaped one does; else the name as written."""
    if _ESCAPED_NEWLINE not in path or os.path.exists(path):
        return path
    unescaped = path.replace(_ESCAPED_NEWLINE, "\n")
    return unescaped if os.path.exists(unescaped) else path


def mapped_files(prefix: str = "") -> list[str]:
    """Files mapped into this process whose base name starts with *prefix*, in map order,
    each once (Linux; empty elsewhere or when the maps cannot be read)."""
    try:
        with open(_MAPS, encoding="utf-8", errors="replace") as handle:
            text = handle.read(_MAPS_LIMIT)
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) != 6 or not parts[5].startswith("/"):
            continue
        path = _unescape(parts[5].strip())
        if os.path.basename(path).startswith(prefix) and path not in found:
            found.append(path)
    return found


def is_mapped(path: str) -> bool:
    """Whether the file at *path* is mapped into this process."""
    name = os.path.basename(os.path.realpath(path))
    return any(same_file(path, other) for other in mapped_files(name[:8]))


def dlopen(path: str, flags: int = DLOPEN_FLAGS) -> int:
    """``dlopen(path, flags)``; the handle, or ``OSError`` with the loader's message."""
    handle: int = _ctypes.dlopen(path, flags)
    return handle


def dlclose(handle: int) -> None:
    """``dlclose(handle)``; ``OSError`` when the loader refuses."""
    _ctypes.dlclose(handle)


def loaded_path(handle: int) -> str | None:
    """The file the dynamic loader mapped for *handle* (glibc's ``dlinfo``), resolved."""
    if not sys.platform.startswith("linux"):
        return None

    class _LinkMap(ctypes.Structure):
        _fields_ = (("l_addr", ctypes.c_void_p), ("l_name", ctypes.c_char_p))

    try:
        dlinfo = ctypes.CDLL(None).dlinfo
        dlinfo.restype = ctypes.c_int
        dlinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        pointer = ctypes.POINTER(_LinkMap)()
        if dlinfo(ctypes.c_void_p(handle), 2, ctypes.byref(pointer)) != 0 or not pointer:
            return None  # 2 is RTLD_DI_LINKMAP
        name = pointer.contents.l_name
    except (AttributeError, OSError, ValueError):
        return None
    if not name:
        return None
    return str(os.path.realpath(name.decode(errors="replace")))


def bound_library(soname: str, candidates: list[str] | None = None) -> str | None:
    """The file ``dlopen(soname)`` returns in this process, found without loading anything
    (``RTLD_NOLOAD``): glibc answers a soname with the first loaded object that has it, so
    this is the library a later ``dlopen(soname)`` (torch's LazyNVRTC) gets.  *candidates*:
    the mapped files to compare with (default: every mapped file named like *soname*).
    ``None`` on other systems, or when nothing with that soname is loaded."""
    if not sys.platform.startswith("linux") or not hasattr(os, "RTLD_NOLOAD"):
        return None
    flags = os.RTLD_NOLOAD | os.RTLD_NOW
    try:
        handle = dlopen(soname, flags)
    except OSError:
        return None
    stem = soname.split(".so")[0] + ".so"
    try:
        for path in mapped_files(stem) if candidates is None else candidates:
            try:
                other = dlopen(path, flags)
            except OSError:
                continue
            dlclose(other)
            if other == handle:
                return path
        return None
    finally:
        dlclose(handle)


# -- ELF ------------------------------------------------------------------------------------


def read_soname(path: str) -> str | None:
    """``DT_SONAME`` of an ELF shared library, read from the file (nothing is loaded)."""
    names = _dynamic_strings(path, _DT_SONAME)
    return names[0] if names else None


def read_needed(path: str) -> list[str]:
    """``DT_NEEDED`` of an ELF file: the sonames it links (read from the file, nothing is
    loaded; empty for what is not a readable ELF file)."""
    return _dynamic_strings(path, _DT_NEEDED)


def linked_by(soname: str) -> list[str]:
    """Libraries mapped into this process that link *soname* (``DT_NEEDED``): they hold the
    library it names for as long as they are loaded (torch >= 2.15's ``libtorch_cuda.so``
    links ``libnvrtc.so.13``)."""
    found = []
    own = soname.split(".so")[0]
    for path in mapped_files(""):
        name = os.path.basename(path)
        if ".so" not in name or name.startswith(own):
            continue
        if soname in read_needed(path):
            found.append(path)
    return found


def _dynamic_strings(path: str, wanted: int) -> list[str]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError):
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []  # a FIFO or a device is no library: never block on it
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            return _strings_from(handle, wanted)
    except (OSError, struct.error, IndexError, ValueError):
        return []
    finally:
        if fd >= 0:
            os.close(fd)


def _strings_from(handle: Any, wanted: int) -> list[str]:
    """The strings of the dynamic section's entries tagged *wanted*, in order."""

    def read(offset: int, size: int) -> bytes:
        handle.seek(offset)
        data: bytes = handle.read(size)
        if len(data) != size:
            raise ValueError("truncated ELF file")
        return data

    def read_string(offset: int) -> str:
        handle.seek(offset)
        data: bytes = handle.read(256)
        return data.split(b"\0", 1)[0].decode("ascii", "replace")

    ident = read(0, 16)
    if ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        return []
    wide, end = ident[4] == 2, "<" if ident[5] == 1 else ">"
    if wide:
        (shoff,) = struct.unpack(end + "Q", read(0x28, 8))
        shentsize, shnum = struct.unpack(end + "HH", read(0x3A, 4))
        layout, entry, dyn = end + "IIQQQQI", 16, end + "qQ"
    else:
        (shoff,) = struct.unpack(end + "I", read(0x20, 4))
        shentsize, shnum = struct.unpack(end + "HH", read(0x2E, 4))
        layout, entry, dyn = end + "IIIIIII", 8, end + "iI"
    if not 0 < shnum < 4096:
        return []
    table = read(shoff, shentsize * shnum)
    sections = []
    for index in range(shnum):
        fields = struct.unpack_from(layout, table, index * shentsize)
        sections.append((fields[1], fields[4], fields[5], fields[6]))  # type, offset, size, link
    found: list[str] = []
    for kind, offset, size, link in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        dynamic = read(offset, min(size, 1 << 20))
        strtab = sections[link][1]
        for pos in range(0, len(dynamic) - entry + 1, entry):
            tag, value = struct.unpack_from(dyn, dynamic, pos)
            if tag == 0:
                break
            if tag == wanted:
                found.append(read_string(strtab + value))
    return found
