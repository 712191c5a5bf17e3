"""The process state of blackwell-compat, in one module, under one lock.

Everything the library remembers between calls about *this process* lives here, so a maintainer
finds it in one place and the tests reset it with one call (:func:`reset_for_tests`):

* emulation: the stack of ``bc.emulate()`` blocks (process-wide) and the architecture
  ``BLACKWELL_COMPAT_EMULATE`` named when the package honoured it (read once);
* targeting: whether the patches were applied with ``force=True`` and, per CUDA device index,
  whether the loaded NVRTC fails for it (cached verdicts);
* the op guard: whether it is on, the recorder ``audit`` installs, the dispatcher registration
  forced by tests or diagnostics;
* per thread: the depth of calls into original kernels (bypass) and of :func:`suspended` blocks;
* the compiler remedies: what the NVRTC remedy loaded (and the archs it serves, read by the
  emulation per op), the Triton variables the ptxas remedy set and what the fuser rung did;
* the patches: :data:`patches`, the engine's book (what it discovered, every patch applied or
  waiting for an import, the generation of its import hooks, and the engine's own lock), kept
  on one object as pluggy keeps what it loaded on its ``PluginManager``.

The modules that own the behaviour (:mod:`.emulation`, :mod:`.devices`, :mod:`.ops`) keep their
functions and read and write the state here. This module sits just above the leaves: it imports
nothing of the package but the library logger (``errors``), so every layer may read it. Reads on
the hot path (the dispatcher kernel) take no lock; writes take :data:`lock`, which is re-entrant
because turning the guard on re-registers kernels while holding it. The engine's book carries
the engine's lock (:attr:`PatchBook.lock`): ``apply()`` holds it for as long as a probe's child
process runs, which the short critical sections of :data:`lock` (read per op under emulation)
must not wait for; it is always taken before :data:`lock`, never after.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import logger

#: The one lock of the process state (re-entrant; registered with :mod:`._forksafe`).
lock = threading.RLock()

# -- emulation ------------------------------------------------------------------------------------

emulation_stack: list[str] = []
"""The archs of the open ``bc.emulate()`` blocks, innermost last."""
env_arch: str | None = None
"""The architecture ``BLACKWELL_COMPAT_EMULATE`` named when it was read (once, when the package
honoured it): a program that changes the variable later changes nothing here."""
device_stack: list[str] = []
"""The emulated device (``"cpu"`` or ``"cuda"``) of each open ``bc.emulate()`` block, innermost
last (parallel to :data:`emulation_stack`)."""
env_device: str | None = None
"""The device ``BLACKWELL_COMPAT_EMULATE_DEVICE`` named when the package honoured the variables."""
device_mode: bool = False
"""Whether the emulated CUDA device is installed (:mod:`blackwell_compat.emulated_device`): then
only work on its tensors fails, never work on CPU tensors (read per op: no lock)."""
emulated_cuda: Any = None
"""The installed emulated CUDA device (an ``EmulatedCuda`` object), or ``None``."""

# -- targeting ------------------------------------------------------------------------------------

forced: bool = False
"""``bc.apply(force=True)``: every CUDA device counts as affected."""
cuda_verdicts: dict[int, bool] = {}
"""CUDA device index -> whether the loaded NVRTC fails for its architecture."""

# -- the op guard and the dispatcher --------------------------------------------------------------

guard_enabled: bool = False
recorder: Callable[[Any], None] | None = None
"""Called with each intercepted call record instead of raising (``audit``)."""
registration_override: str | None = None
"""The dispatcher registration forced by tests or diagnostics (``None``: chosen by torch)."""


# -- the compiler remedies (blackwell_compat.remedies) ---------------------------------------------

nvrtc_remedy: Any = None
"""The NVRTC remedy's :class:`~blackwell_compat.remedies.nvrtc.RemedyState` (``None``: untried)."""
nvrtc_served_archs: frozenset[str] = frozenset()
"""The archs of a capable NVRTC the remedy loaded in place of torch's own: emulation does not
fail for them (that library is judged by its real list).  A copy for the per-op read."""
ptxas_set: dict[str, str] = {}
"""Triton variable -> the ptxas path the ptxas remedy set it to (revert removes it)."""
ptxas_reports: dict[str, Any] = {}
"""GPU arch -> the ptxas remedy's :class:`~blackwell_compat.remedies.ptxas.PtxasReport`."""
fuser_rung: Any = None
"""The fuser rung's :class:`~blackwell_compat.remedies.fuser.FuserState` (``None``: untried);
the switch itself is torch's (``torch._C._jit_can_fuse_on_gpu()``)."""


# -- the patches (blackwell_compat.engine) -----------------------------------------------------


class PatchBook:
    """What the engine knows about the patches of this process, on one object.

    The engine (:mod:`blackwell_compat.engine`) reads and writes it under :attr:`lock`; the
    records are the engine's own ``_Record`` objects (each has ``contexts``: the
    :class:`~blackwell_compat.toolkit.PatchContext` of every module it patched).  One object,
    so the tests reset the engine with the rest of the process state (:func:`reset_for_tests`).
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        """The engine's lock (re-entrant; registered with :mod:`._forksafe`, outermost)."""
        self.registrations: list[Any] | None = None
        """The entry points discovered (``None``: not read yet)."""
        self.records: dict[str, Any] = {}
        """Patch name -> its record: applied, or waiting for an import of a target."""
        self.generation = 0
        """Bumped by every revert: an import hook of an older generation does nothing."""

    def reset(self) -> list[str]:
        """Undo every applied patch (newest first), forget the records and the discovered
        entry points, disarm the import hooks; the problems of an incomplete undo."""
        problems: list[str] = []
        with self.lock:
            self.generation += 1
            for name in reversed(list(self.records)):
                record = self.records.pop(name)
                for module_name, ctx in reversed(list(getattr(record, "contexts", {}).items())):
                    problems += [f"{name} on {module_name}: {e}" for e in ctx.revert()]
            self.registrations = None
        return problems


patches = PatchBook()
"""The engine's book of patches (see :class:`PatchBook`)."""


class _ThreadState(threading.local):
    # Class defaults keep the hot-path reads fast (no per-thread __init__).
    bypass = 0
    """Depth of calls into original kernels: the dispatcher kernel lets them through."""
    suspended = 0
    """Depth of :func:`suspended` blocks: this thread sees no emulation."""
    on_device = 0
    """Depth of ops running for tensors of the emulated CUDA device: the CPU kernels they reach
    are the device's kernels (the Jiterator inventory fails there)."""


local = _ThreadState()

_on_reset: list[Callable[[], None]] = []


# -- reads ----------------------------------------------------------------------------------------


def emulated_arch() -> str | None:
    """The emulated architecture in force, or ``None``.

    Emulation is process-wide (not per thread): on a real affected GPU every thread fails.
    A thread inside :func:`suspended` sees no emulation.
    """
    if local.suspended:
        return None
    with lock:
        if emulation_stack:
            return emulation_stack[-1]
    return env_arch


def emulation_active() -> bool:
    """Whether emulation is on (called for every intercepted op: no lock on the fast path)."""
    if local.suspended:
        return False
    if not (emulation_stack or env_arch is not None):
        return False
    # An arch a remedy-loaded NVRTC lists does not fail: emulation stands in for torch's own
    # NVRTC only (issue 12).
    return not nvrtc_served_archs or emulated_arch() not in nvrtc_served_archs


def emulation_source() -> str | None:
    """What turned the emulation in force on (``bc.emulate(...)`` or the variable), or ``None``."""
    arch = emulated_arch()
    if arch is None:
        return None
    with lock:
        in_block = bool(emulation_stack)
    if in_block:
        return f"bc.emulate({arch!r})"
    return f"BLACKWELL_COMPAT_EMULATE={arch}"


# -- thread-local blocks --------------------------------------------------------------------------


@contextmanager
def suspended() -> Iterator[None]:
    """In the calling thread only, run the block as if no emulation were active (blocks nest)."""
    local.suspended += 1
    try:
        yield
    finally:
        local.suspended -= 1


@contextmanager
def bypass() -> Iterator[None]:
    """Calls made in this thread inside the block reach the original kernels."""
    depth = local.bypass
    local.bypass = depth + 1
    try:
        yield
    finally:
        local.bypass = depth


def bypassing() -> bool:
    return bool(local.bypass)


# -- tests ----------------------------------------------------------------------------------------


def on_reset(callback: Callable[[], None]) -> None:
    """Have :func:`reset_for_tests` also call *callback* (the dispatcher drops its kernels)."""
    if callback not in _on_reset:
        _on_reset.append(callback)


def reset_for_tests() -> None:
    """Put the process state back to a fresh import's (tests only): the one reset of the
    whole process.

    Every applied patch is undone and the engine forgets what it discovered; the Triton
    variables the ptxas remedy set are removed (those changed since are left alone).  The
    architecture ``BLACKWELL_COMPAT_EMULATE`` named is kept: it belongs to the environment
    the test process was started with, not to a test.
    """
    global forced, guard_enabled, recorder, registration_override
    global nvrtc_remedy, nvrtc_served_archs, fuser_rung
    for problem in patches.reset():
        logger.warning("reset_for_tests: undoing a patch was incomplete: %s", problem)
    with lock:
        emulation_stack.clear()
        device_stack.clear()
        # A library the NVRTC remedy loaded stays loaded (the remedy's tests run it in child
        # processes).
        for variable, value in list(ptxas_set.items()):
            if os.environ.get(variable) == value:
                del os.environ[variable]
        ptxas_set.clear()
        ptxas_reports.clear()
        nvrtc_remedy = None
        nvrtc_served_archs = frozenset()
        fuser_rung = None  # the fuser patch's revert (patches.reset above) restored the switch
        forced = False
        cuda_verdicts.clear()
        guard_enabled = False
        recorder = None
        registration_override = None
        for callback in _on_reset:
            callback()
    local.bypass = 0
    local.suspended = 0
    local.on_device = 0
