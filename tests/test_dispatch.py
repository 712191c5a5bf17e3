"""The shared dispatcher kernels: strategies, decisions, registration lifetime, recording."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat import emulation, state
from blackwell_compat.errors import ConfigError
from blackwell_compat.ops import dispatcher as dispatch
from blackwell_compat.ops import kernel

NVRTC_LINE = "nvrtc: error: invalid value for --gpu-architecture (-arch)"
AVAILABLE = [dispatch.BACKEND_SELECT] + (
    [dispatch.BACKEND] if hasattr(torch.library, "get_kernel") else []
)


@pytest.fixture(autouse=True)
def _clean_dispatch() -> Iterator[None]:
    yield
    state.reset_for_tests()


@pytest.fixture(params=AVAILABLE)
def strategy(request: pytest.FixtureRequest) -> Iterator[str]:
    dispatch.set_registration(request.param)
    yield request.param
    dispatch.set_registration(None)


def test_default_strategy_follows_torch() -> None:
    expected = dispatch.BACKEND if hasattr(torch.library, "get_kernel") else dispatch.BACKEND_SELECT
    assert dispatch.registration() == expected


def test_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        dispatch.set_registration("sideways")


def test_emulation_and_guard_under_each_strategy(strategy: str) -> None:
    z = torch.tensor([3 + 4j, -1j])
    x = torch.tensor([1.5, 2.5])
    with bc.emulate():
        keys = dispatch.installed_keys()
        assert keys == (["BackendSelect"] if strategy == dispatch.BACKEND_SELECT else ["CPU"])
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


def test_guard_alone_registers_only_for_cuda(strategy: str) -> None:
    report = bc.apply(only="torch", force=True)
    assert report.applied == ["torch"]
    expected = ["BackendSelect"] if strategy == dispatch.BACKEND_SELECT else ["CUDA"]
    assert dispatch.installed_keys() == expected
    # CPU tensors are not targeted outside emulation: PyTorch's kernels run unchanged.
    calls: list[dispatch.JitCall] = []
    dispatch.set_recorder(calls.append)
    torch.tensor([1 + 1j]).exp()
    assert calls == []
    bc.revert()
    assert dispatch.installed_keys() == []
    assert not dispatch.guard_enabled()


def test_non_target_dtypes_are_bitwise_unchanged(strategy: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(257) * 3
    ints = torch.randint(-50, 50, (33,))
    ops = [
        lambda: x.abs(),
        lambda: x.exp(),
        lambda: x.sqrt(),
        lambda: x.neg(),
        lambda: x.sigmoid(),
        lambda: x * 0.5,
        lambda: ints * 0.5,
        lambda: ints // 3,
        lambda: x / 3,
        lambda: x.sum(0),
        lambda: torch.logaddexp(x, x.flip(0)),
        lambda: x**0.5,
        lambda: torch.tensor([1 + 1j]) * torch.tensor([2 - 3j]),
        lambda: torch.tensor([1 + 1j]).sum(),
        lambda: x.prod(dtype=torch.bool),
    ]
    expected = [op() for op in ops]
    with bc.emulate(), bc.patched(only="torch"):
        got = [op() for op in ops]
    for want, have in zip(expected, got, strict=True):
        # Exactly the same values (NaN where PyTorch gives NaN), not merely close ones.
        torch.testing.assert_close(have, want, rtol=0, atol=0, equal_nan=True)


def test_numbers_in_tensor_slots_keep_wrapped_number_promotion(strategy: str) -> None:
    ints = torch.tensor([1, 2, 3], dtype=torch.int16)
    half = torch.tensor([1.0, 2.0], dtype=torch.float16)
    with bc.emulate():
        assert (ints * 0.5).dtype == torch.float32
        assert (ints * 3).dtype == torch.int16
        assert (half * 0.1).dtype == torch.float16
        assert (ints / 2).dtype == torch.float32
        assert torch.equal(half * 0.1, torch.tensor([0.1, 0.2], dtype=torch.float16))


def test_meta_tensors_are_never_targeted(strategy: str) -> None:
    z = torch.empty(4, dtype=torch.complex64, device="meta")
    with bc.emulate(), bc.patched(only="torch"):
        assert z.abs().device.type == "meta"
    with bc.emulate():
        assert z.exp().shape == (4,)


def test_recorder_records_and_continues(strategy: str) -> None:
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


def test_recorder_sees_guarded_calls(strategy: str) -> None:
    calls: list[dispatch.JitCall] = []
    with bc.emulate(), bc.patched(only="torch"):
        dispatch.set_recorder(calls.append)
        torch.tensor([1 + 1j]).abs()
    assert calls and calls[0].mode == "guard"


def test_nested_calls_inside_an_original_kernel_are_not_recorded_twice(strategy: str) -> None:
    """CPU angle() calls angle.out internally: one user call, one record."""
    calls: list[dispatch.JitCall] = []
    with bc.emulate():
        dispatch.set_recorder(calls.append)
        torch.tensor([1 + 1j]).angle()
    assert len(calls) == 1


def test_bypass_reaches_the_original_kernel(strategy: str) -> None:
    with bc.emulate():
        with dispatch.bypass():
            assert dispatch.bypassing()
            torch.tensor([1 + 1j]).exp()
        assert not dispatch.bypassing()
        with pytest.raises(RuntimeError, match="gpu-architecture"):
            torch.tensor([1 + 1j]).exp()


def test_guard_works_from_other_threads(strategy: str) -> None:
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


def test_overload_specs_cover_every_form() -> None:
    names = {spec.qualified for spec in dispatch.overload_specs()}
    for qualified in (
        "aten::abs.out",
        "aten::exp",
        "aten::exp_",
        "aten::exp.out",
        "aten::sum.dim_IntList",
        "aten::sum.IntList_out",
        "aten::prod",
        "aten::prod.int_out",
        "aten::pow.Tensor_Scalar",
        "aten::pow_.Scalar",
        "aten::mul.Tensor",
        "aten::mul_.Tensor",
        "aten::conj_physical_",
        "aten::kaiser_window.beta",
        "aten::lgamma_",
        "aten::sigmoid_backward.grad_input",
    ):
        assert qualified in names, qualified
    # Composite overloads that re-dispatch to the ones above are not intercepted twice.
    assert "aten::abs" not in names
    assert "aten::mul.Scalar" not in names


def test_in_place_and_out_forms_are_written_where_expected() -> None:
    z = torch.tensor([1 + 1j, -2 + 0.5j])
    with emulation.suspended():
        want = z.exp()
    with bc.emulate(), bc.patched(only="torch"):
        out = torch.empty(0, dtype=torch.complex64)
        returned = torch.exp(z, out=out)
        assert returned is out
        torch.testing.assert_close(out, want)
        inplace = z.clone()
        assert inplace.exp_() is inplace
        torch.testing.assert_close(inplace, want)


def test_complex_free_calls_never_reach_the_decision(
    strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overloads jitted only for complex dtypes decide from the operands' dtypes first: a call
    without a complex operand, ``dtype=`` or ``out=`` goes straight to the original kernel
    (that is what keeps the guard's cost near a trivial pass-through kernel's)."""
    decided: list[str] = []
    real_decide = kernel.decide

    def counting(spec: dispatch.OverloadSpec, *rest: object) -> object:
        decided.append(spec.qualified)
        return real_decide(spec, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(kernel, "decide", counting)
    x = torch.randn(4)
    with bc.emulate("sm_121"), bc.patched(only="torch"):
        x * 2.5, x * x, torch.exp(x), torch.abs(x), x.sum(), torch.rsqrt(x.abs() + 1)
        assert decided == []
        torch.exp(x.to(torch.complex64))
        x.sum(dtype=torch.complex64)
    assert "aten::exp" in decided
    assert any(name.startswith("aten::sum") for name in decided)
