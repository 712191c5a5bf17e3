"""Fork safety: a child forked while another thread holds one of the package's locks runs on."""

from __future__ import annotations

import importlib
import os
import pkgutil
import signal
import sys
import threading
import time
import uuid
from typing import Any

import pytest

import blackwell_compat
from blackwell_compat import _forksafe, engine, registry
from blackwell_compat import state as process_state

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only"),
    # Forking a threaded process is exactly what these tests do on purpose.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def _wait_child(pid: int, limit: float) -> int | None:
    """The child's exit status, or None when it was still running after *limit* seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _fork(child: Any) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 3
        try:
            code = 0 if child() else 1
        finally:
            os._exit(code)
    return pid


def test_every_module_lock_of_the_package_is_handled():
    """Every module-level lock in the package (imported in full) is one the fork hook knows."""
    names = [blackwell_compat.__name__]
    for info in pkgutil.walk_packages(blackwell_compat.__path__, prefix="blackwell_compat."):
        if ".cli" in info.name or info.name.endswith("__main__"):
            continue
        names.append(info.name)
    found = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # a module needing a target library that is not installed
        for attribute, value in vars(module).items():
            if isinstance(value, LOCK_TYPES):
                found.append((name, attribute, value))
    assert found, "no lock found: the scan is broken"
    handled = [id(lock) for lock in _forksafe.current_locks()]
    missing = [(name, attribute) for name, attribute, lock in found if id(lock) not in handled]
    assert missing == []
    assert len(handled) == len(set(handled)) == len({id(lock) for *_, lock in found})


@pytest.mark.parametrize(("module_name", "attribute"), _forksafe.LOCKS)
def test_a_lock_held_by_another_thread_is_free_in_the_child(module_name, attribute, monkeypatch):
    lock = importlib.import_module(module_name)
    for part in attribute.split("."):  # "patches.lock": the engine's lock on the state's book
        lock = getattr(lock, part)
    monkeypatch.setattr(_forksafe, "WAIT_S", 0.2)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert held.wait(10)
    try:
        started = time.monotonic()
        pid = _fork(lambda: lock.acquire(timeout=5))
        waited = time.monotonic() - started
        code = _wait_child(pid, 20)
    finally:
        release.set()
        thread.join(10)
    assert code == 0, f"child could not take {module_name}.{attribute} (exit {code})"
    assert waited < 3, f"fork waited {waited:.1f} s for a lock held elsewhere"
    assert lock.acquire(timeout=5)  # the parent's lock works as before
    lock.release()


@pytest.mark.slow
def test_forty_forks_while_another_thread_applies_and_reverts(tmp_path, monkeypatch):
    """Issue 14, point 4: 40 of 40 children used to hang in status()/apply()."""
    name = f"bc_fork_target_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def compute(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module(name)

    class SlowPatch(registry.Patch):
        """Holds the engine lock for a while in apply(), as a real patch importing torch does."""

        summary = "slow test patch"
        modules = (name,)
        requires_affected = False

        def apply(self, module: Any, ctx: registry.PatchContext) -> None:
            time.sleep(0.002)
            ctx.replace_function(module, "compute", lambda x: ("patched", x))

    SlowPatch.name = "slowpatch"

    class EntryPoint:
        name = "slowpatch"
        value = "tests:SlowPatch"
        dist = None

        def load(self) -> Any:
            return SlowPatch

    monkeypatch.setattr(process_state.patches, "registrations", registry.discover([EntryPoint()]))
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            engine.apply()
            engine.revert()

    def child() -> bool:
        states = [s.state for s in engine.status()]
        report = engine.apply()
        patched = sys.modules[name].compute(1) == ("patched", 1)
        engine.revert()
        return bool(states) and report.applied == ["slowpatch"] and patched

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    codes: list[int | None] = []
    held = 0  # forks requested while the other thread was inside apply()/revert()
    try:
        for _ in range(40):
            time.sleep(0.003)
            if process_state.patches.lock.acquire(blocking=False):
                process_state.patches.lock.release()
            else:
                held += 1
            codes.append(_wait_child(_fork(child), 10))
            if codes.count(None) >= 3:
                break  # hanging children: no need to wait for 40 of them
    finally:
        stop.set()
        thread.join(20)
    assert codes == [0] * 40, f"children: {codes} (None = hung)"
    assert held >= 10, f"only {held} of 40 forks met the lock held: the test lost its race"


def test_a_single_threaded_fork_holding_a_lock_neither_waits_nor_breaks_it(monkeypatch):
    """The forking thread's own locks: released normally in both processes, no waiting."""
    from blackwell_compat.probing import platform

    monkeypatch.setattr(_forksafe, "WAIT_S", 30.0)
    assert threading.active_count() == 1
    started = time.monotonic()
    with platform._lock:  # a plain Lock, held by this (the only) thread across the fork
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                platform._lock.release()
                os._exit(0 if platform._lock.acquire(timeout=5) else 1)
            finally:
                os._exit(2)
    waited = time.monotonic() - started
    assert _wait_child(pid, 20) == 0
    assert waited < 10
