"""``bc.emulate()``: make CPU tensors fail the way they fail on an affected GPU.

Inside ``with bc.emulate("sm_121"):`` (or with ``BLACKWELL_COMPAT_EMULATE=sm_121`` in the
environment) every op/dtype pair of the Jiterator inventory (:mod:`blackwell_compat.inventory`)
raises, for CPU tensors, the ``RuntimeError`` PyTorch raises on a GPU whose architecture the
loaded NVRTC does not know.  Other ops, other dtypes and empty tensors keep working.  While
emulation is active the probe reports the emulated GPU as affected, so ``bc.apply()`` applies
the op guard, and the guard treats CPU tensors as living on the affected device.

This module keeps the emulation state and must stay cheap to import (the probe reads it).  The
dispatcher kernels live in :mod:`blackwell_compat.dispatch` and are installed when torch is (or
gets) imported, and removed again when the last emulation ends.

Emulation is process-wide, not per thread: on a real affected GPU every thread fails.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from . import config
from .remedies import nvrtc as _nvrtc_remedy

if TYPE_CHECKING:  # pragma: no cover
    from .dispatch import JitCall

_lock = threading.RLock()
_stack: list[str] = []
_env_arch: str | None = None
"""The architecture ``BLACKWELL_COMPAT_EMULATE`` named when it was read (once, at activation):
a program that changes the variable later changes nothing here."""


class _ThreadState(threading.local):
    depth = 0  # per-thread suspension depth, see suspended(); a class default keeps reads fast


_local = _ThreadState()

#: The line NVRTC writes when it does not know the requested architecture.
NVRTC_ERROR_LINE = "nvrtc: error: invalid value for --gpu-architecture (-arch)"
#: nvrtcResult code for that failure (NVRTC_ERROR_INVALID_OPTION).
NVRTC_ERROR_INVALID_OPTION = 5

# arch -> (log, library path) or None when no NVRTC could reproduce the failure
_compile_cache: dict[str, tuple[str, str] | None] = {}


def current_arch() -> str | None:
    """The emulated architecture in force, or ``None``.

    Emulation is process-wide (not per thread): on a real affected GPU every thread fails.
    A thread inside :func:`suspended` sees no emulation.
    """
    if _local.depth:
        return None
    with _lock:
        if _stack:
            return _stack[-1]
    return _env_arch


def is_active() -> bool:
    """Whether emulation is on (called for every intercepted op: no lock on the fast path)."""
    if _local.depth:
        return False
    if not (_stack or _env_arch is not None):
        return False
    # Issue 12: an emulated arch that a remedy-loaded NVRTC lists does not fail (that NVRTC is
    # judged by its real list; emulation stands in for torch's own only).
    served = _nvrtc_remedy.served_archs()
    return not served or current_arch() not in served


@contextmanager
def suspended() -> Iterator[None]:
    """In the calling thread only, run the block as if no emulation were active.

    For code that stands for work done on the real CPU while the CPU plays the affected GPU:
    the ``cpu`` strategies of the targeted patches compute their reference result inside it.
    Other threads keep emulating.  Blocks nest.
    """
    _local.depth += 1
    try:
        yield
    finally:
        _local.depth -= 1


def _sync_kernels() -> None:
    """Install the emulation kernels now, or when torch is imported; remove unused ones."""
    from . import dispatch

    dispatch.ensure_installed_when_torch_imported()


def emulate(arch: str = "sm_121") -> AbstractContextManager[str]:
    """Inside the block, Jiterator-bound ops on CPU tensors raise the affected GPU's error.

    Blocks may nest (the innermost arch wins).  The argument is checked by the call itself,
    before any block is entered: a non-``str`` (``emulate(None)``, ``emulate(123)``) is a
    ``TypeError``, a malformed name a :class:`~blackwell_compat.ConfigError`, both naming
    the accepted forms.
    """
    return _emulation(config.parse_arch(arch, source="emulate(arch=...)"))


@contextmanager
def _emulation(normalised: str) -> Iterator[str]:
    with _lock:
        _stack.append(normalised)
    try:
        _sync_kernels()
        yield normalised
    finally:
        with _lock:
            # Remove the innermost occurrence: blocks may nest with the same arch.
            for i in range(len(_stack) - 1, -1, -1):
                if _stack[i] == normalised:
                    del _stack[i]
                    break
        if "torch" in sys.modules:
            from . import dispatch

            dispatch.sync()


def activate_from_environment() -> None:
    """Turn on emulation for the whole process from ``BLACKWELL_COMPAT_EMULATE``."""
    global _env_arch
    arch = config.emulated_arch_from_env()  # raises ConfigError when malformed
    if arch is None:
        return
    _env_arch = arch
    _sync_kernels()


# -- the error ------------------------------------------------------------------------------------


def _nvrtc_library() -> str | None:
    """The NVRTC library torch would load, as the probe finds it (``None`` if unknown).

    Only a library the probe could read, which means a test process loaded and called it and
    survived, is returned: a crashing, hanging or working-directory library is never loaded here.
    """
    try:
        from .probing import probe

        nvrtc = probe().nvrtc
    except Exception:  # the probe never raises by contract; be safe anyway
        return None
    if not nvrtc.known or nvrtc.crash is not None:
        return None
    return nvrtc.path if isinstance(nvrtc.path, str) else None


def compile_log(arch: str, library: str, *, timeout: float | None = None) -> tuple[int, str]:
    """Compile a tiny program for *arch* with the NVRTC at *library*: ``(result, log)``.

    ``result`` is NVRTC's return code (0 success, 5 ``NVRTC_ERROR_INVALID_OPTION``).  The
    compile runs in the probe's test process (:func:`~blackwell_compat.probing.isolation.
    run_test_child`: own interpreter, time limit), never in this process: a library that passed
    the probe's version and arch calls may still crash or hang when it compiles, and that must
    not take the program down.  Raises ``OSError`` when it could not compile (not an NVRTC
    library, a crash, a signal, a hang).
    """
    from .probing.isolation import default_timeout, run_test_child

    limit = default_timeout() if timeout is None else timeout
    outcome = run_test_child("compile", library, limit, arch)
    answer = outcome.result
    if outcome.failure is not None:
        raise OSError(f"the process compiling with {library} {outcome.what_happened()}")
    if answer is None:
        raise OSError(f"the process compiling with {library} gave no answer")
    if "error" in answer:
        raise OSError(str(answer["error"]))
    return int(answer["result"]), str(answer["log"])


def real_nvrtc_log(arch: str, library: str | None = None) -> tuple[str, str] | None:
    """``(log, library)`` when an NVRTC really fails to compile for *arch*, else ``None``.

    Uses *library* or the NVRTC the probe says torch loads.  Cached per arch (and library).
    """
    library = library or _nvrtc_library()
    if not library:
        return None
    key = f"{arch}@{library}"
    with _lock:
        if key in _compile_cache:
            return _compile_cache[key]
    try:
        result, log_text = compile_log(arch, library)
    except OSError:
        outcome = None
    else:
        failed = result == NVRTC_ERROR_INVALID_OPTION and "gpu-architecture" in log_text
        outcome = (log_text.strip(), library) if failed else None
    with _lock:
        _compile_cache[key] = outcome
    return outcome


def jiterator_error(call: JitCall, arch: str | None = None) -> RuntimeError:
    """The ``RuntimeError`` an affected GPU raises for *call* (emulated on a CPU tensor).

    Its message contains NVRTC's own log line ``nvrtc: error: invalid value for
    --gpu-architecture (-arch)``; where an NVRTC that lacks the arch is installed, the log is
    produced by really compiling with it.
    """
    arch = arch or current_arch() or "sm_121"
    real = real_nvrtc_log(arch)
    if real is not None:
        log_text, library = real
        origin = f"log produced by compiling for {arch} with {library}"
    else:
        log_text = NVRTC_ERROR_LINE
        origin = (
            f"log reproduced: no installed NVRTC lacks {arch}, so the message is the one "
            "NVRTC 12.8 prints"
        )
    if NVRTC_ERROR_LINE not in log_text:
        log_text = f"{log_text}\n{NVRTC_ERROR_LINE}".strip()
    message = (
        f"{log_text}\n\n"
        f"[blackwell-compat emulation of {arch}] The Jiterator kernel {call.kernel!r} "
        f"({call.op}, dtype {call.dtype}) is compiled at run time with NVRTC, which fails for "
        f"{arch}. Source: {call.source}. {origin}. Fix: bc.apply() (op guard) or a targeted "
        "patch; see `python -m blackwell_compat audit`."
    )
    return RuntimeError(message)
