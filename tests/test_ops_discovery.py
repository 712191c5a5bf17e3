"""Overload discovery (blackwell_compat.ops.discovery): which ATen overloads are intercepted."""

from __future__ import annotations

from blackwell_compat.ops import discovery


def test_overload_specs_cover_every_form() -> None:
    names = {spec.qualified for spec in discovery.overload_specs()}
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
