"""The process state in one module: one reset for the tests, thread-local blocks, one lock."""

from __future__ import annotations

import subprocess
import sys
import threading

from blackwell_compat import _forksafe, state


def test_reset_for_tests_resets_every_part_of_the_state(monkeypatch) -> None:
    called: list[str] = []
    monkeypatch.setattr(state, "_on_reset", [*state._on_reset])  # the test's hook stays here
    state.on_reset(lambda: called.append("hook"))
    state.emulation_stack.append("sm_121")
    state.forced = True
    state.cuda_verdicts[0] = True
    state.guard_enabled = True
    state.recorder = print
    state.registration_override = "backend-select"
    state.local.bypass = 2
    state.local.suspended = 1

    state.reset_for_tests()

    assert state.emulation_stack == []
    assert state.forced is False
    assert state.cuda_verdicts == {}
    assert state.guard_enabled is False
    assert state.recorder is None
    assert state.registration_override is None
    assert state.local.bypass == 0
    assert state.local.suspended == 0
    assert called == ["hook"]


def test_emulation_reads_come_from_the_stack_then_the_environment(monkeypatch) -> None:
    monkeypatch.setattr(state, "env_arch", "sm_120")
    assert state.emulated_arch() == "sm_120"
    assert state.emulation_source() == "BLACKWELL_COMPAT_EMULATE=sm_120"
    state.emulation_stack.append("sm_121")
    assert state.emulated_arch() == "sm_121"
    assert state.emulation_source() == "bc.emulate('sm_121')"
    state.emulation_stack.clear()
    monkeypatch.setattr(state, "env_arch", None)
    assert state.emulated_arch() is None
    assert state.emulation_source() is None
    assert not state.emulation_active()


def test_suspension_and_bypass_belong_to_the_calling_thread() -> None:
    state.emulation_stack.append("sm_121")
    seen: dict[str, object] = {}

    def other() -> None:
        seen["active"] = state.emulation_active()
        seen["bypassing"] = state.bypassing()

    with state.suspended(), state.bypass():
        assert not state.emulation_active()
        assert state.bypassing()
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
    assert seen == {"active": True, "bypassing": False}
    assert state.emulation_active()
    assert not state.bypassing()


def test_the_lock_is_reentrant_and_known_to_the_fork_handlers() -> None:
    with state.lock, state.lock:
        pass
    assert ("blackwell_compat.state", "lock") in _forksafe.LOCKS
    assert state.lock in _forksafe.current_locks()


def test_the_ops_layer_loads_without_the_emulation() -> None:
    """The dispatcher and its kernel never import the emulation (it registers itself)."""
    code = (
        "import sys\n"
        "import blackwell_compat.ops.dispatcher\n"
        "print('blackwell_compat.emulation' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
