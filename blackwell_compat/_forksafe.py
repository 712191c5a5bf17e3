"""Keep the package's locks usable in a child made by ``os.fork()``.

A child of ``fork`` holds one thread, the one that forked, but a copy of every lock: a lock
another thread held at that moment stays held in the child for ever, so the child's first
``bc.status()`` or ``bc.apply()`` would hang.  ``os.register_at_fork`` runs :func:`_before`
in the forking thread, which takes every lock of the package, in layer order (the order the
package itself nests them), so the fork happens between two critical sections and the child
sees consistent state; both parent and child then release them.  A lock that cannot be taken
within :data:`WAIT_S` (its holder is stuck, or waits for the forking thread) is not waited for
any longer: the child gets it re-initialised (unlocked) instead, and the state it protects is
as the other thread left it.

In a process with one thread nothing is done: every held lock is the forking thread's own, and
it releases them in the child as in the parent.  The locks are looked up by name when a fork
happens, in modules already imported, so this
module imports nothing beyond the standard library and costs nothing until a fork.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing is not loaded at interpreter start-up
    from typing import Any

#: ``(module, attribute)`` of every lock the package keeps, outermost first: a thread holding
#: one of these may go on to take the ones after it, never the ones before.  An attribute may
#: be dotted (``patches.lock``: the engine's lock, on the book the process state holds).
LOCKS: tuple[tuple[str, str], ...] = (
    ("blackwell_compat.import_trigger", "_lock"),
    ("blackwell_compat.autostart", "_lock"),
    ("blackwell_compat.state", "patches.lock"),
    ("blackwell_compat.toolkit.safe_globals", "_allow_lock"),
    ("blackwell_compat.state", "lock"),
    ("blackwell_compat.remedies.nvrtc", "_lock"),
    ("blackwell_compat.remedies.ptxas", "_lock"),
    ("blackwell_compat.remedies.fuser", "_lock"),
    ("blackwell_compat.spectral", "_lock"),
    ("blackwell_compat.probing.platform", "_lock"),
    ("blackwell_compat.probing.isolation", "_store_lock"),
)

#: How long a fork waits, in all, for other threads to leave the package's critical sections.
WAIT_S = 5.0

# Locks taken by _before in the forking thread, and the ones it gave up on.
_taken: list[Any] = []
_missed: list[Any] = []


def current_locks() -> list[Any]:
    """The lock objects of :data:`LOCKS` whose modules are imported, in order."""
    found = []
    for module_name, attribute in LOCKS:
        lock = sys.modules.get(module_name)
        for part in attribute.split("."):  # "patches.lock": an attribute of a module's object
            lock = getattr(lock, part, None) if lock is not None else None
        if lock is not None:
            found.append(lock)
    return found


def _before() -> None:
    _taken.clear()
    _missed.clear()
    threading = sys.modules.get("threading")
    if threading is None or threading.active_count() <= 1:
        return  # no other thread: a lock held now is held by the forking thread, which goes on
    deadline = time.monotonic() + WAIT_S
    for lock in current_locks():
        try:
            got = lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:  # never stop a fork
            got = False
        (_taken if got else _missed).append(lock)


def _release_taken() -> None:
    for lock in reversed(_taken):
        try:
            lock.release()
        except Exception:  # pragma: no cover - the lock was replaced meanwhile
            pass
    _taken.clear()


def _after_in_parent() -> None:
    _release_taken()
    _missed.clear()


def _after_in_child() -> None:
    _release_taken()
    for lock in _missed:
        reinit = getattr(lock, "_at_fork_reinit", None)
        if reinit is not None:
            reinit()
    _missed.clear()


_installed = False


def install() -> None:
    """Register the fork handlers (once per process; ``fork`` children inherit them)."""
    global _installed
    if _installed or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(
        before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child
    )
    _installed = True
