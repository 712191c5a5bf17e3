"""A scoped ``torch.load`` allow-list: classes accepted by ``weights_only`` loads for one block.

torch keeps its allow-list in one process-wide set, so allow-listing for one load is a
*window*: while it is open, loads in other threads accept the same classes (and nothing else).
:func:`allow_listed` adds only the classes that are not already there, counts nested and
concurrent windows, and on exit removes, by difference, exactly what it added and nobody else
claimed: a class the user allow-listed before the window stays, and so does one the user passes
to ``torch.serialization.add_safe_globals`` during the window (once :func:`watch_user_additions`
watches that function; torch updates the set by read-modify-write, so the watcher serialises it
with the window's own additions and removals).  ``weights_only=False`` is never needed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .patch import PatchContext

__all__ = ["allow_listed", "kept_listed", "watch_user_additions"]

_allow_lock = threading.Lock()
# class -> (number of open windows holding it, torch's context manager that added it)
_holders: dict[Any, tuple[int, Any]] = {}
# Held classes the user allow-listed during a window: they stay when the window closes.
_claimed_by_user: set[Any] = set()


def _listed(cls: Any, present: Sequence[Any]) -> bool:
    return any(entry is cls for entry in present)


@contextmanager
def allow_listed(classes: Sequence[Any]) -> Iterator[None]:
    """Allow *classes* in ``weights_only`` loads for the duration of the block.

    Uses ``torch.serialization.safe_globals`` per class.  A class already on torch's list
    (the user's own ``add_safe_globals``) is left alone and stays after the block; nested and
    concurrent blocks share one registration, removed when the last of them ends, unless the
    user allow-listed the class meanwhile (seen while :func:`watch_user_additions` watches).
    """
    import torch.serialization as serialization

    taken: list[Any] = []
    with _allow_lock:
        present = serialization.get_safe_globals()
        for cls in classes:
            held = _holders.get(cls)
            if held is not None:
                _holders[cls] = (held[0] + 1, held[1])
            elif _listed(cls, present):
                continue
            else:
                manager: Any = serialization.safe_globals([cls])
                manager.__enter__()
                _holders[cls] = (1, manager)
            taken.append(cls)
    try:
        yield
    finally:
        with _allow_lock:
            for cls in taken:
                count, manager = _holders[cls]
                if count > 1:
                    _holders[cls] = (count - 1, manager)
                    continue
                del _holders[cls]
                if cls in _claimed_by_user:
                    _claimed_by_user.discard(cls)  # the user's now: it stays on the list
                else:
                    manager.__exit__(None, None, None)


@contextmanager
def kept_listed(classes: Sequence[Any]) -> Iterator[None]:
    """Around a third party's own allow-list window over *classes* (torch's ``safe_globals``
    removes its classes on exit even when the user had allow-listed them): hold them through
    :func:`allow_listed` and, when the block ends, put back what that window's exit took from
    the list as it stood when the block began."""
    import torch.serialization as serialization

    with allow_listed(classes):
        listed = [c for c in classes if _listed(c, serialization.get_safe_globals())]
        try:
            yield
        finally:
            with _allow_lock:
                present = serialization.get_safe_globals()
                taken = [c for c in listed if not _listed(c, present)]
                if taken:
                    # torch's own add, not the watched public one: these are not new claims.
                    manager: Any = serialization.safe_globals(taken)
                    manager.__enter__()


class _WatchedAddSafeGlobals:
    """Replacement for ``torch.serialization.add_safe_globals`` while a patch is applied:
    the original, under the windows' lock, noting the classes a window holds."""

    def __init__(self) -> None:
        self.original: Callable[..., Any] | None = None

    def __call__(self, safe_globals: Any, *args: Any, **kwargs: Any) -> Any:
        original = self.original
        assert original is not None
        with _allow_lock:
            result = original(safe_globals, *args, **kwargs)
            for entry in safe_globals if isinstance(safe_globals, (list, tuple, set)) else ():
                try:
                    if entry in _holders:
                        _claimed_by_user.add(entry)
                except TypeError:  # an unhashable entry; torch has said what it thinks of it
                    continue
        return result


def watch_user_additions(ctx: PatchContext) -> None:
    """Watch ``torch.serialization.add_safe_globals`` for as long as *ctx* is applied."""
    import torch.serialization as serialization

    watcher = _WatchedAddSafeGlobals()
    watcher.original = ctx.replace_function(serialization, "add_safe_globals", watcher)
