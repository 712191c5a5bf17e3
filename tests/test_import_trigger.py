"""The import trigger (:mod:`blackwell_compat.import_trigger`): work that waits for the first
import of a module, runs before the module's code, and for modules still being imported.

Each test imports modules of its own (unique names, in a folder put on ``sys.path``) in this
process; the trigger's finder stays on ``sys.meta_path`` and does nothing without callbacks.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import textwrap
import threading
import types

import pytest
import wrapt

from blackwell_compat import import_trigger


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Write modules into a folder on sys.path: ``modules(name=source, ...)``; everything they
    record goes into the list ``sys.bc_trigger_log``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    log: list[object] = []
    monkeypatch.setattr(sys, "bc_trigger_log", log, raising=False)
    written: list[str] = []

    def write(**sources: str) -> list[object]:
        for name, source in sources.items():
            (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
            written.append(name)
        importlib.invalidate_caches()
        return log

    yield write
    for name in written:
        sys.modules.pop(name, None)
        import_trigger._book.pending.pop(name, None)


def record(entry: object) -> None:
    sys.bc_trigger_log.append(entry)  # type: ignore[attr-defined]


def test_callback_runs_once_before_the_module_code(modules):
    log = modules(bct_first="import sys\nsys.bc_trigger_log.append('module code')\n")

    def before():
        record(("callback", "bct_first" in sys.modules))

    import_trigger.before_import("bct_first", before)
    assert import_trigger.armed("bct_first")
    import bct_first  # noqa: F401

    importlib.reload(sys.modules["bct_first"])  # a reload is no first import
    assert log == [("callback", False), "module code", "module code"]
    assert not import_trigger.armed("bct_first")
    assert sys.modules["bct_first"].__loader__.__class__.__name__ == "SourceFileLoader"
    assert sys.modules["bct_first"].__spec__.loader.__class__.__name__ == "SourceFileLoader"


def test_asking_whether_the_module_exists_runs_nothing(modules):
    log = modules(bct_query="import sys\nsys.bc_trigger_log.append('module code')\n")
    import_trigger.before_import("bct_query", lambda: record("callback"))
    spec = importlib.util.find_spec("bct_query")
    assert spec is not None and spec.origin.endswith("bct_query.py")
    assert log == []
    assert import_trigger.armed("bct_query")
    importlib.import_module("bct_query")
    assert log == ["callback", "module code"]


def test_a_callback_that_imports_the_module_does_not_run_it_twice(modules):
    log = modules(bct_twice="import sys\nsys.bc_trigger_log.append('module code')\nVALUE = 7\n")
    import_trigger.before_import("bct_twice", lambda: importlib.import_module("bct_twice"))
    module = importlib.import_module("bct_twice")
    assert log == ["module code"]
    assert module.VALUE == 7 and sys.modules["bct_twice"] is module


def test_post_import_hooks_registered_by_a_callback_run_after_the_module_code(modules):
    log = modules(bct_hooked="import sys\nsys.bc_trigger_log.append('module code')\nVALUE = 3\n")

    def before():
        wrapt.register_post_import_hook(lambda module: record(("hook", module.VALUE)), "bct_hooked")

    import_trigger.before_import("bct_hooked", before)
    importlib.import_module("bct_hooked")
    assert log == ["module code", ("hook", 3)]


def test_fire_runs_the_callbacks_now_and_only_once(modules):
    log = modules(bct_fired="import sys\nsys.bc_trigger_log.append('module code')\n")
    import_trigger.before_import("bct_fired", lambda: record("first"))
    import_trigger.before_import("bct_fired", lambda: record("second"))
    import_trigger.fire("bct_fired")
    import_trigger.fire("bct_fired")
    importlib.import_module("bct_fired")
    assert log == ["first", "second", "module code"]


def test_an_imported_module_runs_the_callback_at_once(modules):
    log = modules(bct_done="")
    importlib.import_module("bct_done")
    import_trigger.before_import("bct_done", lambda: record("now"))
    assert log == ["now"]
    assert not import_trigger.armed("bct_done")


def test_a_failing_callback_is_a_warning_and_the_import_goes_on(modules):
    log = modules(bct_fails="import sys\nsys.bc_trigger_log.append('module code')\n")

    def boom():
        raise ValueError("exploded")

    import_trigger.before_import("bct_fails", boom)
    import_trigger.before_import("bct_fails", lambda: record("next callback"))
    with pytest.warns(RuntimeWarning, match="import bct_fails.*ValueError: exploded"):
        importlib.import_module("bct_fails")
    assert log == ["next callback", "module code"]


def test_threads_importing_at_once_wait_for_the_callbacks(modules):
    log = modules(bct_threads="import sys\nsys.bc_trigger_log.append('module code')\n")
    started = threading.Event()
    release = threading.Event()

    def slow():
        started.set()
        release.wait(10)
        record("callback done")

    import_trigger.before_import("bct_threads", slow)
    seen: list[object] = []
    first = threading.Thread(target=lambda: seen.append(importlib.import_module("bct_threads")))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: seen.append(importlib.import_module("bct_threads")))
    second.start()
    second.join(0.3)
    assert second.is_alive(), "the second import must wait for the callback"
    release.set()
    first.join(10)
    second.join(10)
    assert log == ["callback done", "module code"]
    assert len(seen) == 2 and seen[0] is seen[1]


# -- modules still being imported ----------------------------------------------------------


def test_when_finished_calls_back_after_the_outer_module_is_complete(modules):
    log = modules(
        bct_outer="""\
        import sys
        sys.bc_trigger_log.append('outer starts')
        import bct_inner
        DEFINED_LATER = 'complete'
        sys.bc_trigger_log.append('outer ends')
        """,
        bct_inner="""\
        import sys
        from blackwell_compat import import_trigger
        sys.bc_trigger_log.append(('outer in progress', import_trigger.in_progress('bct_outer')))
        watched = import_trigger.when_finished(
            'bct_outer', lambda m: sys.bc_trigger_log.append(('finished', m.DEFINED_LATER))
        )
        sys.bc_trigger_log.append(('watched', watched))
        """,
    )
    module = importlib.import_module("bct_outer")
    assert log == [
        "outer starts",
        ("outer in progress", True),
        ("watched", True),
        "outer ends",
        ("finished", "complete"),
    ]
    assert not import_trigger.in_progress("bct_outer")
    assert type(module.__spec__).__name__ == "ModuleSpec"
    assert type(module.__spec__) is importlib.machinery.ModuleSpec


def test_when_finished_calls_nothing_when_the_import_fails(modules):
    log = modules(
        bct_broken="""\
        import sys
        from blackwell_compat import import_trigger
        import_trigger.when_finished('bct_broken', lambda m: sys.bc_trigger_log.append('called'))
        raise RuntimeError('the module fails')
        """
    )
    with pytest.raises(RuntimeError, match="the module fails"):
        importlib.import_module("bct_broken")
    assert log == []
    assert "bct_broken" not in sys.modules


def test_when_finished_refuses_modules_not_being_imported(modules):
    modules(bct_plain="")
    assert import_trigger.when_finished("bct_plain", lambda m: None) is False
    importlib.import_module("bct_plain")
    assert not import_trigger.in_progress("bct_plain")
    assert import_trigger.when_finished("bct_plain", lambda m: None) is False


def test_a_finder_result_the_import_system_did_not_make_is_not_wrapped():
    # A module made by hand (no spec): nothing to watch, nothing raised.
    module = types.ModuleType("bct_handmade")
    sys.modules["bct_handmade"] = module
    try:
        assert not import_trigger.in_progress("bct_handmade")
        assert import_trigger.when_finished("bct_handmade", lambda m: None) is False
    finally:
        del sys.modules["bct_handmade"]
