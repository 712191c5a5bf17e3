"""Native libraries are tried in a child process before this process touches them.

NVML and NVRTC are C libraries.  A broken copy (a truncated file, a constructor that aborts, an
entry point that crashes or never returns) would take the caller down with it, and the caller
may be any Python program started with ``BLACKWELL_COMPAT_AUTO=1``.  So the probe first loads
and calls each library in a throwaway child interpreter, started by the package's one runner
(:func:`blackwell_compat.children.run`): ``python -I -S``, a private empty working directory,
none of this package's activation variables, a timeout (``BLACKWELL_COMPAT_PROBE_TIMEOUT``
seconds, default 20), killed with the program that started it.  What the child saw becomes a
*verdict*, stored on disk per library file (path, device, inode, size, mtime and ctime) so
that later processes skip the child:

- NVRTC: the facts themselves (version, archs) are stored; the probe never loads NVRTC into
  this process at all.
- NVML: a library that survived is then read in this process (GPUs are live facts); one that
  crashed, hung or was killed is never loaded here, and its verdict is the answer.

The store is one JSON file in ``BLACKWELL_COMPAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/
blackwell-compat`` (``~/.cache/blackwell-compat``; ``%LOCALAPPDATA%\\blackwell-compat`` on
Windows), used only when this user owns that folder and nobody else can write to it (else a
private ``<tmp>/blackwell-compat-<uid>``, :mod:`blackwell_compat.trusted`).  It is only an
accelerator: when it cannot be read or written every process runs the child again.
``python -m blackwell_compat doctor`` always tests afresh.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import children, config, trusted
from ..errors import logger
from . import nvml, nvrtc
from .nvml import GPU, DriverInfo, default_library_names, read_nvml_here
from .nvrtc import NvrtcInfo, info_from_dict

__all__ = [
    "DEFAULT_TIMEOUT",
    "ChildOutcome",
    "cache_dir",
    "child_main",
    "compile_verdict",
    "default_timeout",
    "forget_verdicts",
    "probe_child_env",
    "read_nvml",
    "read_nvrtc",
    "run_test_child",
]

CACHE_DIR_VARIABLE = config.CACHE_DIR
TIMEOUT_VARIABLE = config.PROBE_TIMEOUT
DEFAULT_TIMEOUT = 20.0
"""Seconds a test process may take before it counts as hung (NVML's first ``nvmlInit`` on a
many-GPU machine without persistence mode can take several seconds)."""

_MARKER = "@@blackwell-compat-native@@ "
_STORE_NAME = "native-verdicts-v1.json"
_MAX_ENTRIES = 256
_STORE_LIMIT = 4 << 20  # 256 entries of a few hundred bytes each; anything bigger is no store

_store_lock = threading.Lock()


# -- settings -----------------------------------------------------------------------------------


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The cache folder the environment asks for (``BLACKWELL_COMPAT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/blackwell-compat``, else ``~/.cache/blackwell-compat``), or the private
    fallback ``<tmp>/blackwell-compat-<uid>`` where it asks for none that may be used (a
    relative variable, no home).  Nothing is checked here: what is read and written goes
    through :func:`blackwell_compat.trusted.cache_folders`."""
    configured, _ = trusted.configured_cache(env)
    if configured is not None:
        return configured
    fallback = trusted.fallback_cache()
    return fallback if fallback is not None else Path(os.path.abspath(os.sep))


def probe_child_env() -> dict[str, str]:
    """The environment of every helper process (:func:`blackwell_compat.children.helper_env`;
    kept under this name for callers written before that module existed)."""
    return children.helper_env()


def default_timeout(env: Mapping[str, str] | None = None) -> float:
    """``BLACKWELL_COMPAT_PROBE_TIMEOUT`` when it is a positive number, else 20 s."""
    raw = (os.environ if env is None else env).get(TIMEOUT_VARIABLE, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if 0 < value < 1e6:
            return value
        logger.warning(
            "%s=%r is not a positive number of seconds; using %g",
            TIMEOUT_VARIABLE,
            raw,
            DEFAULT_TIMEOUT,
        )
    return DEFAULT_TIMEOUT


# -- the store ----------------------------------------------------------------------------------


def _store_paths() -> list[Path]:
    """The store in each cache folder the library may use, the configured one first, then the
    private fallback (a read-only or refused cache folder): only folders this user (or root)
    owns and nobody else can write to (:func:`blackwell_compat.trusted.cache_folders`).
    Without any usable store every process tests afresh (correct, slower)."""
    return [folder / _STORE_NAME for folder in trusted.cache_folders().usable]


def _read(path: Path) -> dict[str, Any]:
    """The entries of one store; empty when it is missing, unreadable, a link, a FIFO, not
    a regular file or bigger than :data:`_STORE_LIMIT` (never a hang)."""
    try:
        data = json.loads(trusted.read_file(path, _STORE_LIMIT).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def _load_store() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in reversed(_store_paths()):  # the main store wins
        merged.update(_read(path))
    return merged


def _write(path: Path, entries: dict[str, Any]) -> None:
    """Write *entries* atomically to *path*; raises ``OSError`` when it cannot."""
    folder = trusted.make_private_folder(path.parent)
    fd, temporary = tempfile.mkstemp(prefix=".verdicts-", dir=str(folder))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"version": 1, "entries": entries}, handle, indent=1, sort_keys=True)
        os.replace(temporary, folder / path.name)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _save_entry(key: str, entry: dict[str, Any]) -> None:
    """Add one verdict; concurrent writers may lose an entry, never corrupt the file."""
    with _store_lock:
        for path in _store_paths():
            entries = _read(path)
            entries[key] = entry
            if len(entries) > _MAX_ENTRIES:
                ordered = sorted(entries.items(), key=lambda kv: str(kv[1].get("tested_at", "")))
                entries = dict(ordered[-_MAX_ENTRIES:])
            try:
                _write(path, entries)
                return
            except (OSError, TypeError, ValueError) as exc:
                logger.debug("could not store the verdict for %s in %s: %s", key, path, exc)


def forget_verdicts() -> None:
    """Delete every stored verdict (the next probe tests each library again)."""
    with _store_lock:
        for path in _store_paths():
            try:
                path.unlink()
            except OSError:
                pass


def _file_id(path: str) -> dict[str, int] | None:
    """What identifies the contents of the file at *path*: its device and inode, size, and
    modification and change times.  ``ctime`` cannot be set back by a user: a rewrite in place
    that keeps the size and restores the mtime still changes it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "device": st.st_dev,
    }


# -- the child ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildOutcome:
    """What one test process did."""

    result: dict[str, Any] | None
    """The facts it reported, when it got that far."""
    last_step: str | None
    """The last native step it announced (``"calling nvmlInit_v2"``)."""
    loaded: str | None
    """The file the loader mapped, when the child got that far."""
    failure: str | None
    """``None`` when it exited 0, else what happened (``"was killed by signal 11 (SIGSEGV)"``)."""
    seconds: float

    @property
    def says_something(self) -> bool:
        """Whether the outcome is about the library: the child reached it (announced a step).

        A child that never got that far (no Python at ``sys.executable``, an interpreter that
        is not Python, this package not importable) says nothing about the library, so no
        verdict is stored and the library is not loaded either.
        """
        return self.last_step is not None

    def what_happened(self) -> str:
        """``"was killed by signal 11 (SIGSEGV) while calling nvrtcVersion"``."""
        if self.failure is None:
            return "loaded and called it, and exited normally"
        if self.last_step and not self.last_step.startswith("finished"):
            return f"{self.failure} while {self.last_step}"
        return self.failure


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent.parent)


def _phrase(outcome: children.Outcome) -> str | None:
    """The runner's words for a failure, as the subject "a test process" takes them."""
    failure = outcome.failure()
    if failure is not None and failure.startswith("killed"):
        return "was " + failure
    return failure


def _emit(record: Mapping[str, Any]) -> None:
    sys.stdout.write(_MARKER + json.dumps(dict(record), default=str) + "\n")
    sys.stdout.flush()


def run_test_child(kind: str, target: str, timeout: float, *extra: str) -> ChildOutcome:
    """Load and read one library in a child interpreter; never raises, never hangs.

    *kind* is ``nvrtc``, ``nvml`` or ``compile`` (*extra*: the arch to compile for, then the
    libraries to load first).  The child is started by :func:`blackwell_compat.children.run`
    (``python -I -S``, a private empty working directory, a time limit, killed with this
    process)."""
    code = (
        "import sys\n"
        f"sys.path.append({_package_root()!r})\n"
        "from blackwell_compat.probing.isolation import child_main\n"
        "sys.exit(child_main(sys.argv[1:]))\n"
    )
    outcome = children.run(
        children.python_argv("-S", "-c", children.guarded_code(code), kind, target, *extra),
        timeout=timeout,
        env=children.helper_env(),
        guarded=True,
    )
    result: dict[str, Any] | None = None
    last_step: str | None = None
    loaded: str | None = None
    for line in outcome.stdout_text.splitlines():
        if not line.startswith(_MARKER):
            continue
        try:
            record = json.loads(line[len(_MARKER) :])
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if "step" in record:
            last_step = str(record["step"])
            if last_step.startswith("loaded "):
                loaded = last_step[len("loaded ") :]
        if isinstance(record.get("result"), dict):
            result = record["result"]
    failure = _phrase(outcome)
    if failure is not None and failure.startswith("exited"):
        tail = outcome.stderr_tail.strip().splitlines()
        tail = [x.strip() for x in tail if x.strip()]
        if tail:
            failure += f" ({tail[-1][:300]})"
    return ChildOutcome(result, last_step, loaded, failure, outcome.seconds)


def child_main(args: Sequence[str]) -> int:
    """Child side: read one library and print what was found, announcing every native step."""
    kind = args[0] if args else ""
    target = args[1] if len(args) > 1 else ""

    def step(what: str) -> None:
        _emit({"step": what})

    if kind == "nvrtc":
        _emit({"result": nvrtc.read_nvrtc_here(target, trace=step).as_dict()})
    elif kind == "nvml":
        driver, gpus = nvml.read_nvml_here(target or None, trace=step)
        _emit({"result": {"driver": driver.as_dict(), "gpus": [g.as_dict() for g in gpus]}})
    elif kind == "compile" and len(args) > 2:
        _emit({"result": nvrtc.compile_here(target, args[2], args[3:], trace=step)})
    else:
        sys.stderr.write(f"unknown kind {kind!r}\n")
        return 2
    step("finished; the process exits")
    return 0


def _verdict_entry(kind: str, path: str, outcome: ChildOutcome, timeout: float) -> dict[str, Any]:
    return {
        "kind": kind,
        "path": path,
        "file": _file_id(path),
        "ok": outcome.failure is None and outcome.result is not None,
        "what": outcome.what_happened(),
        "result": outcome.result,
        "timeout": timeout,
        "seconds": round(outcome.seconds, 3),
        "tested_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _cached(key: str, path: str | None) -> dict[str, Any] | None:
    entry = _load_store().get(key)
    if not isinstance(entry, dict):
        return None
    if path is not None and entry.get("file") != _file_id(path):
        return None  # the file changed (or vanished) since it was tested
    return entry


# -- NVRTC --------------------------------------------------------------------------------------


def read_nvrtc(
    path: str | os.PathLike[str],
    *,
    source: str = "",
    retest: bool = False,
    timeout: float | None = None,
) -> NvrtcInfo:
    """The version and supported archs of the NVRTC library at *path*.

    Never raises: every problem is described in the returned ``error``.  The library is never
    loaded into this process: a test process reads it under a timeout and the facts are stored
    per file (path, size, mtime, ctime), so a crash or a hang becomes ``error`` and ``crash``.
    *retest* ignores a stored answer.
    """
    text = os.fspath(path)
    source = source or "given explicitly"
    if not os.path.exists(text):
        return NvrtcInfo(path=text, source=source, error=f"{text} does not exist")
    if os.path.isdir(text):
        return NvrtcInfo(path=text, source=source, error=f"{text} is a folder, not a library")
    absolute = os.path.abspath(text)
    key = f"nvrtc|{absolute}"
    entry = None if retest else _cached(key, absolute)
    if entry is None:
        limit = timeout if timeout is not None else default_timeout()
        outcome = run_test_child("nvrtc", absolute, limit)
        if not outcome.says_something:
            return NvrtcInfo(
                path=text,
                source=source,
                error=f"not read: {_untested(outcome)}",
            )
        entry = _verdict_entry("nvrtc", absolute, outcome, limit)
        _save_entry(key, entry)
    return _nvrtc_from_entry(entry, text, source)


def _untested(outcome: ChildOutcome) -> str:
    return (
        f"the process that tests native libraries {outcome.failure or 'reported nothing'} "
        f"before it reached the library ({sys.executable or 'no Python executable'} -I -S); "
        "blackwell-compat does not load an untested library"
    )


def _nvrtc_from_entry(entry: Mapping[str, Any], path: str, source: str) -> NvrtcInfo:
    result = entry.get("result")
    if entry.get("ok") and isinstance(result, dict):
        try:
            return info_from_dict(result, path=path, source=source)
        except (TypeError, ValueError):
            pass  # a store written by someone else: treat as a failed test
    what = str(entry.get("what") or "did not report")
    return NvrtcInfo(
        path=path,
        source=source,
        error=(
            f"NVRTC at {path} is unusable: a test process that loaded it {what}; "
            "blackwell-compat does not load it into this process"
        ),
        crash=what,
    )


def compile_verdict(
    path: str,
    arch: str,
    preload: Sequence[str] = (),
    *,
    timeout: float | None = None,
    retest: bool = False,
) -> dict[str, Any] | None:
    """Whether the NVRTC at *path* compiles a tiny kernel for *arch* (*preload* loaded first),
    tested in a child and stored like the other verdicts (per file of each library), so that
    the NVRTC remedy does not pay a compile at every interpreter start (issue 12).  *retest*
    ignores a stored answer.

    The stored entry: ``ok`` (the child exited normally), ``result`` (``{"result", "log"}`` or
    ``{"error"}``), ``what``; ``None`` when the child never reached the library."""
    absolute = os.path.abspath(path)
    extra = [os.path.abspath(p) for p in preload]
    key = "|".join(["compile", absolute, *extra, arch])
    ids = [_file_id(p) for p in extra]
    entry = None if retest else _cached(key, absolute)
    if entry is not None and entry.get("preload_files") != ids:
        entry = None
    if entry is None:
        limit = timeout if timeout is not None else default_timeout()
        outcome = run_test_child("compile", absolute, limit, arch, *extra)
        if not outcome.says_something:
            return None
        entry = _verdict_entry("compile", absolute, outcome, limit)
        entry["preload_files"] = ids
        _save_entry(key, entry)
    return entry


# -- NVML ---------------------------------------------------------------------------------------


def _nvml_key(names: Sequence[str]) -> str:
    """What decides which NVML file a name resolves to: the names, the loader's path and
    cache (Linux), ``PATH`` (Windows)."""
    parts = ["nvml", *names]
    if sys.platform == "win32":
        parts.append("PATH=" + os.environ.get("PATH", ""))
    else:
        search = os.environ.get("LD_LIBRARY_PATH", "")
        parts.append("LD_LIBRARY_PATH=" + search)
        # A library dropped into one of those folders changes the folder's mtime.
        parts.extend(
            f"{folder}={json.dumps(_file_id(folder), sort_keys=True)}"
            for folder in search.split(os.pathsep)
            if folder
        )
        parts.append("ld.so.cache=" + json.dumps(_file_id("/etc/ld.so.cache"), sort_keys=True))
    return "|".join(parts)


def read_nvml(
    path: str | os.PathLike[str] | None = None,
    *,
    retest: bool = False,
    timeout: float | None = None,
) -> tuple[DriverInfo, tuple[GPU, ...]]:
    """Driver facts and the GPUs NVML lists, from the NVML library at *path* (default: the
    system's).  Never raises; without a driver the answer says "no NVIDIA driver".

    NVML is loaded into this process only once a test process survived loading and calling it;
    *retest* ignores a stored verdict and *timeout* bounds the test process (default:
    ``BLACKWELL_COMPAT_PROBE_TIMEOUT`` or 20 s).
    """
    names = (os.fspath(path),) if path is not None else default_library_names()
    if path is not None and not os.path.exists(names[0]):
        return read_nvml_here(path)  # nothing to load: the answer says it does not exist
    key = _nvml_key(names)
    entry = None if retest else _load_store().get(key)
    if isinstance(entry, dict):
        loaded = entry.get("loaded")
        if loaded and entry.get("file") != _file_id(str(loaded)):
            entry = None  # the library file changed since it was tested
    if not isinstance(entry, dict):
        limit = timeout if timeout is not None else default_timeout()
        outcome = run_test_child("nvml", names[0] if path is not None else "", limit)
        if not outcome.says_something:
            return DriverInfo(available=False, library=names[-1], error=_untested(outcome)), ()
        loaded = outcome.loaded
        entry = _verdict_entry("nvml", loaded or names[0], outcome, limit)
        entry["loaded"] = loaded
        entry["file"] = _file_id(loaded) if loaded else None
        _save_entry(key, entry)
        fresh = True
    else:
        fresh = False
    where = str(entry.get("loaded") or names[-1])
    if not entry.get("ok"):
        what = str(entry.get("what") or "did not report")
        return (
            DriverInfo(
                available=False,
                library=where,
                error=(
                    f"NVML at {where} is unusable: a test process that loaded it {what}; "
                    "blackwell-compat does not load it into this process"
                ),
                crash=what,
            ),
            (),
        )
    loaded = entry.get("loaded")
    result = entry.get("result")
    if (fresh or not loaded) and isinstance(result, dict):
        # Fresh facts need no second read; with nothing loaded (no driver) the stored answer
        # stands, so that no untested file is ever loaded here.
        try:
            driver = DriverInfo.from_dict(result.get("driver") or {})
            gpus = tuple(GPU.from_dict(g) for g in result.get("gpus") or ())
            return driver, gpus
        except (KeyError, TypeError, ValueError) as exc:
            logger.debug("NVML facts from the test process unreadable: %r", exc)
            return (
                DriverInfo(
                    available=False,
                    library=where,
                    error=f"the facts a test process reported about NVML were unreadable: {exc}",
                ),
                (),
            )
    # It survived: read the live facts in this process, from the very file that was tested.
    return read_nvml_here(str(loaded))
