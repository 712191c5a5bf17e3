"""Run work at the moment a module is first imported, before its code runs.

The start-up hook must cost nothing in a process that never imports torch, yet act before
torch's own ``__init__`` runs: that is where torch preloads its NVRTC (and torch >= 2.15's
``libtorch_cuda.so`` links it), which the NVRTC remedy has to precede.  :func:`before_import`
puts one finder at the front of ``sys.meta_path`` that waits for the module:

- it acts on an import, not on a question: ``importlib.util.find_spec("torch")`` (transformers
  and others ask whether torch is installed without importing it) finds the module as usual and
  runs nothing.  The callbacks run in the loader's ``create_module``, when the import system is
  about to make the module object: the module is not in ``sys.modules`` yet;
- a callback may import anything, the awaited module included: the outer import then returns
  the module the callback imported instead of running its code a second time;
- post-import hooks that a callback registers with wrapt for the awaited module are called once
  its code has run (its spec was found before they existed, so wrapt could not wrap its loader);
- :func:`fire` runs the pending callbacks at once (the package root does, at the first use of
  its API), and :func:`when_finished` calls back when a module that is being imported right now
  has finished (a patch target that imported torch before its own code was done).

Standard library only, and only modules every interpreter has loaded by the time ``site`` runs
``.pth`` files: the hook imports this in every process of an environment that sets
``BLACKWELL_COMPAT_AUTO``.  One re-entrant lock (registered with :mod:`._forksafe`).
"""

from __future__ import annotations

import _thread
import sys
import warnings

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing is not loaded at interpreter start-up
    from collections.abc import Callable
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

__all__ = ["armed", "before_import", "fire", "in_progress", "when_finished"]

#: Guards the book and serialises the callbacks (re-entrant: a callback may fire again).
_lock = _thread.RLock()
_WATCHERS = "_blackwell_compat_when_finished"


class _Book:
    """What the trigger keeps, in one object (the process state module costs threading and
    typing to import, which the start-up hook must not pay)."""

    def __init__(self) -> None:
        self.pending: dict[str, list[Callable[[], object]]] = {}
        """Module name -> callbacks waiting for its first import."""
        self.running: set[str] = set()
        """Module names whose callbacks are running (in the thread holding the lock)."""
        self.searching: set[tuple[int, str]] = set()
        """(thread id, module name) of the searches the finder makes itself: it asks the rest
        of ``sys.meta_path`` for the real spec, which calls the finder again."""
        self.watched_classes: dict[type, type] = {}
        """Spec class -> its subclass that notices the end of an import."""


_book = _Book()


def before_import(name: str, callback: Callable[[], object]) -> None:
    """Call *callback* once, just before module *name* is first executed in this process (or
    at :func:`fire`); at once when *name* is imported already.  Callbacks run in the order they
    were given; one that raises is shown as a warning and the import goes on."""
    with _lock:
        if name in sys.modules:
            now = True
        else:
            now = False
            _book.pending.setdefault(name, []).append(callback)
            if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
                sys.meta_path.insert(0, _Finder())
    if now:
        _call(callback, name)


def armed(name: str) -> bool:
    """Whether callbacks wait for the first import of *name* (and are not running now)."""
    return name in _book.pending and name not in _book.running


def fire(name: str) -> None:
    """Run the callbacks waiting for *name* now (no-op when none wait).  A caller in another
    thread waits until they have run; a callback calling this again returns at once.

    The callbacks stay registered while they run, so that another thread importing *name*
    meanwhile waits for them instead of getting ahead of them.
    """
    with _lock:
        callbacks = _book.pending.get(name)
        if not callbacks or name in _book.running:
            return
        _book.running.add(name)
        try:
            for callback in callbacks:  # a callback may add callbacks: they run too
                _call(callback, name)
        finally:
            _book.running.discard(name)
            del _book.pending[name]


def _call(callback: Callable[[], object], name: str) -> None:
    try:
        callback()
    except Exception as exc:  # the import of the user's module must go on
        warnings.warn(
            f"blackwell-compat: the work waiting for `import {name}` failed: "
            f"{type(exc).__name__}: {exc}",
            RuntimeWarning,
            stacklevel=2,
        )


class _Finder:
    """Finds nothing itself: hands back the spec the rest of ``sys.meta_path`` finds, with a
    loader that runs the pending callbacks before the module is made."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        if fullname not in _book.pending:
            return None
        key = (_thread.get_ident(), fullname)
        if key in _book.searching:
            return None
        _book.searching.add(key)
        try:
            from importlib.util import find_spec

            spec = find_spec(fullname)
        finally:
            _book.searching.discard(key)
        if spec is None or spec.loader is None or isinstance(spec.loader, _Loader):
            return spec
        spec.loader = _Loader(spec.loader, fullname)  # type: ignore[assignment]
        return spec


class _Loader:
    """The real loader of the awaited module, plus the callbacks (in ``create_module``) and
    wrapt's post-import hooks (after ``exec_module``).  The module and its spec get the real
    loader back before its code runs."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name
        self._imported_meanwhile: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._loader, attribute)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        fire(self._name)
        meanwhile = sys.modules.get(self._name)
        if meanwhile is not None:  # a callback imported it: do not run its code twice
            self._imported_meanwhile = meanwhile
            return meanwhile
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and getattr(spec, "loader", None) is self:
            spec.loader = self._loader
        if module is not self._imported_meanwhile:
            self._loader.exec_module(module)
        wrapt = sys.modules.get("wrapt")
        notify = getattr(wrapt, "notify_module_loaded", None)
        if notify is not None:
            notify(module)


# -- modules imported right now ------------------------------------------------------------


def in_progress(name: str) -> bool:
    """Whether module *name* is in ``sys.modules`` but its code is still running (it imported
    something, torch perhaps, before its own code was done)."""
    module = sys.modules.get(name)
    if module is None:
        return False
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def when_finished(name: str, callback: Callable[[ModuleType], object]) -> bool:
    """For a module being imported right now (:func:`in_progress`): call ``callback(module)``
    once its code has run, not at all when its import fails.  ``False`` when *name* is not
    being imported or its import cannot be watched (a spec of an unusual kind).

    The import system marks the end of a module's import on its spec (``_initializing`` goes
    back to false, after the module is final in ``sys.modules``); the spec's class is swapped
    for a subclass that notices that moment, then swapped back.
    """
    if not in_progress(name):
        return False
    spec = sys.modules[name].__spec__
    with _lock:
        waiting = spec.__dict__.get(_WATCHERS)
        if waiting is None:
            try:
                spec.__class__ = _watched(type(spec))
            except TypeError:
                return False
            waiting = spec.__dict__[_WATCHERS] = []
        waiting.append(callback)
    return True


def _watched(base: type) -> type:
    """A subclass of the spec class *base* whose ``_initializing`` calls the watchers when the
    import system sets it back to false."""
    known = _book.watched_classes.get(base)
    if known is not None:
        return known

    def get(self: Any) -> bool:
        return bool(self.__dict__.get("_initializing", False))

    def set_(self: Any, value: bool) -> None:
        self.__dict__["_initializing"] = value
        if not value:
            _finished(self, base)

    watched = type(base.__name__, (base,), {"_initializing": property(get, set_)})
    _book.watched_classes[base] = watched
    return watched


def _finished(spec: Any, base: type) -> None:
    with _lock:
        callbacks = spec.__dict__.pop(_WATCHERS, [])
        spec.__class__ = base
    name = str(spec.name)
    module = sys.modules.get(name)
    if module is None or getattr(module, "__spec__", None) is not spec:
        return  # the import failed (or someone replaced the module): nothing to call
    for callback in callbacks:
        try:
            callback(module)
        except Exception as exc:  # the import that just finished must not fail here
            warnings.warn(
                f"blackwell-compat: the work waiting for {name} to finish importing "
                f"failed: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
