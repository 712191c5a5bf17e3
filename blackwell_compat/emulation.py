"""``bc.emulate()``: make CPU tensors fail the way they fail on an affected GPU.

This module keeps the emulation state and must stay cheap to import (the probe reads it).
The dispatcher kernels that raise the NVRTC error live in :mod:`blackwell_compat.dispatch`
and are installed lazily, when torch is (or gets) imported.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from . import config

_lock = threading.RLock()
_stack: list[str] = []
_env_active = False
_local = threading.local()  # per-thread suspension depth, see suspended()


def current_arch() -> str | None:
    """The emulated architecture in force, or ``None``.

    Emulation is process-wide (not per thread): on a real affected GPU every thread fails.
    A thread inside :func:`suspended` sees no emulation.
    """
    if getattr(_local, "depth", 0):
        return None
    with _lock:
        if _stack:
            return _stack[-1]
    if _env_active:
        return config.emulated_arch_from_env()
    return None


def is_active() -> bool:
    return current_arch() is not None


@contextmanager
def suspended() -> Iterator[None]:
    """In the calling thread only, run the block as if no emulation were active.

    For code that stands for work done on the real CPU while the CPU plays the affected GPU:
    the ``cpu`` strategies of the targeted patches compute their reference result inside it.
    Other threads keep emulating.  Blocks nest.
    """
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def _install_kernels() -> None:
    """Install the emulation kernels now, or when torch is imported."""
    from . import dispatch

    dispatch.ensure_installed_when_torch_imported()


@contextmanager
def emulate(arch: str = "sm_121") -> Iterator[str]:
    """Inside the block, Jiterator-bound ops on CPU tensors raise the affected GPU's error."""
    normalised = config.parse_arch(arch, source="emulate(arch=...)")
    with _lock:
        _stack.append(normalised)
    try:
        _install_kernels()
        yield normalised
    finally:
        with _lock:
            # Remove the innermost occurrence: blocks may nest with the same arch.
            for i in range(len(_stack) - 1, -1, -1):
                if _stack[i] == normalised:
                    del _stack[i]
                    break


def activate_from_environment() -> None:
    """Turn on emulation for the whole process from ``BLACKWELL_COMPAT_EMULATE``."""
    global _env_active
    arch = config.emulated_arch_from_env()  # raises ConfigError when malformed
    if arch is None:
        return
    _env_active = True
    _install_kernels()
