"""The dispatcher registration (blackwell_compat.ops.dispatcher): which registration, which keys
while the guard and emulation are on, registration lifetime, the recorder, status."""

from __future__ import annotations

import threading

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat import emulation
from blackwell_compat.errors import ConfigError
from blackwell_compat.ops import dispatcher as dispatch


def test_default_registration_follows_torch() -> None:
    expected = dispatch.BACKEND if hasattr(torch.library, "get_kernel") else dispatch.BACKEND_SELECT
    assert dispatch.registration() == expected


def test_unknown_registration_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        dispatch.set_registration("sideways")


def test_emulation_and_guard_under_each_registration(registration: str) -> None:
    z = torch.tensor([3 + 4j, -1j])
    x = torch.tensor([1.5, 2.5])
    with bc.emulate():
        keys = dispatch.installed_keys()
        assert keys == (["BackendSelect"] if registration == dispatch.BACKEND_SELECT else ["CPU"])
        with pytest.raises(RuntimeError, match="gpu-architecture"):
            z.abs()
        with pytest.raises(RuntimeError, match="gpu-architecture"):
            x.lgamma()
        with bc.patched(only="torch"):
            torch.testing.assert_close(z.abs(), torch.tensor([5.0, 1.0]))
            with emulation.suspended():
                reference = x.lgamma()
            torch.testing.assert_close(x.lgamma(), reference)
    assert dispatch.installed_keys() == []


def test_guard_alone_registers_only_for_cuda(registration: str) -> None:
    report = bc.apply(only="torch", force=True)
    assert report.applied == ["torch"]
    expected = ["BackendSelect"] if registration == dispatch.BACKEND_SELECT else ["CUDA"]
    assert dispatch.installed_keys() == expected
    # CPU tensors are not targeted outside emulation: PyTorch's kernels run unchanged.
    calls: list[dispatch.JitCall] = []
    dispatch.set_recorder(calls.append)
    torch.tensor([1 + 1j]).exp()
    assert calls == []
    bc.revert()
    assert dispatch.installed_keys() == []
    assert not dispatch.guard_enabled()


def test_recorder_records_and_continues(registration: str) -> None:
    calls: list[dispatch.JitCall] = []
    z = torch.tensor([1 + 1j, 2 - 1j])
    with emulation.suspended():
        reference = z.exp()
    with bc.emulate():
        previous = dispatch.set_recorder(calls.append)
        try:
            result = z.exp()
        finally:
            dispatch.set_recorder(previous)
    torch.testing.assert_close(result, reference)
    assert [(c.entry, c.dtype, c.mode) for c in calls] == [("exp", "complex64", "emulate")]
    assert calls[0].shapes == ((2,),)
    assert calls[0].op == "aten::exp"


def test_recorder_sees_guarded_calls(registration: str) -> None:
    calls: list[dispatch.JitCall] = []
    with bc.emulate(), bc.patched(only="torch"):
        dispatch.set_recorder(calls.append)
        torch.tensor([1 + 1j]).abs()
    assert calls and calls[0].mode == "guard"


def test_guard_works_from_other_threads(registration: str) -> None:
    results: list[torch.Tensor] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(torch.tensor([3 + 4j]).abs())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with bc.emulate(), bc.patched(only="torch"):
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors
    assert [float(r) for r in results] == [5.0] * 4


def test_status_describes_registrations() -> None:
    with bc.emulate():
        info = dispatch.status()
        assert info["emulation"] == "sm_121"
        assert sum(info["keys"].values()) >= 150
        assert "problems" not in info
