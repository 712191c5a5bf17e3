"""The dispatcher kernel (blackwell_compat.ops.kernel): what it decides call by call, and what
it leaves to the original kernels unchanged."""

from __future__ import annotations

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat import emulation
from blackwell_compat.ops import dispatcher as dispatch
from blackwell_compat.ops import kernel


def test_non_target_dtypes_are_bitwise_unchanged(registration: str) -> None:
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


def test_meta_tensors_are_never_targeted(registration: str) -> None:
    z = torch.empty(4, dtype=torch.complex64, device="meta")
    with bc.emulate(), bc.patched(only="torch"):
        assert z.abs().device.type == "meta"
    with bc.emulate():
        assert z.exp().shape == (4,)


def test_nested_calls_inside_an_original_kernel_are_not_recorded_twice(registration: str) -> None:
    """CPU angle() calls angle.out internally: one user call, one record."""
    calls: list[dispatch.JitCall] = []
    with bc.emulate():
        dispatch.set_recorder(calls.append)
        torch.tensor([1 + 1j]).angle()
    assert len(calls) == 1


def test_bypass_reaches_the_original_kernel(registration: str) -> None:
    with bc.emulate():
        with dispatch.bypass():
            assert dispatch.bypassing()
            torch.tensor([1 + 1j]).exp()
        assert not dispatch.bypassing()
        with pytest.raises(RuntimeError, match="gpu-architecture"):
            torch.tensor([1 + 1j]).exp()


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
    registration: str, monkeypatch: pytest.MonkeyPatch
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
