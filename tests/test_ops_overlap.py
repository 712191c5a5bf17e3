"""The op guard's overlap decisions (blackwell_compat/ops/overlap.py) against PyTorch's own.

``torch._debug_has_internal_overlap`` exposes ATen's ``has_internal_overlap``; ATen's
``get_overlap_status`` shows in whether a CPU ``torch.neg(a, out=b)`` (a TensorIterator op the
guard does not touch) refuses.  Views are drawn with random sizes, strides and offsets in one
storage, including zero strides, gaps, reversed dimension orders and empty views.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blackwell_compat.ops import overlap
from blackwell_compat.ops.discovery import overload_specs

STORAGE = 64


@st.composite
def views(
    draw: st.DrawFn, base: torch.Tensor, sizes: list[int] | None = None, min_stride: int = 0
) -> torch.Tensor:
    """A view of *base* (random sizes unless given, strides, offset), within its storage."""
    if sizes is None:
        dims = draw(st.integers(0, 3))
        sizes = draw(st.lists(st.integers(0, 4), min_size=dims, max_size=dims))
    strides = draw(st.lists(st.integers(min_stride, 6), min_size=len(sizes), max_size=len(sizes)))
    extent = 0 if 0 in sizes else sum((s - 1) * t for s, t in zip(sizes, strides, strict=True))
    offset = draw(st.integers(0, STORAGE - 1 - extent))
    return base.as_strided(sizes, strides, offset)


_ATEN_INTERNAL = {0: overlap.NO, 1: overlap.YES, 2: overlap.TOO_HARD}


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_internal_overlap_as_aten(data: st.DataObject) -> None:
    t = data.draw(views(torch.zeros(STORAGE)))
    want = _ATEN_INTERNAL[torch._debug_has_internal_overlap(t)]
    assert overlap.has_internal_overlap(t) == want, (t.shape, t.stride())
    # ATen answers "no" exactly for non-overlapping and dense tensors
    dense = overlap.non_overlapping_and_dense(t.shape, t.stride())
    assert dense == (want == overlap.NO) or t.is_contiguous()


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_partial_overlap_as_aten(data: st.DataObject) -> None:
    base = torch.zeros(STORAGE)
    a = data.draw(views(base))
    # an output without zero strides (those are refused for internal overlap first)
    b = data.draw(views(base, list(a.shape), min_stride=1))
    try:
        torch.neg(a, out=b)
        refused = False
    except RuntimeError as exc:
        assert str(exc) == overlap.PARTIAL_OVERLAP_MESSAGE
        refused = True
    assert (overlap.overlap_status(b, a) == overlap.PARTIAL) == refused, (
        a.shape,
        a.stride(),
        a.storage_offset(),
        b.stride(),
        b.storage_offset(),
    )


def test_status_of_simple_arrangements() -> None:
    x = torch.zeros(8)
    assert overlap.overlap_status(x, x) == overlap.FULL
    assert overlap.overlap_status(x[1:5], x[1:5]) == overlap.FULL
    assert overlap.overlap_status(x[1:5], x[0:4]) == overlap.PARTIAL
    assert overlap.overlap_status(x[0:4], x[4:8]) == overlap.NO
    assert overlap.overlap_status(x[0::2], x[1::2]) == overlap.TOO_HARD
    assert overlap.overlap_status(x[:0], x) == overlap.NO
    assert overlap.overlap_status(x, torch.zeros(8)) == overlap.NO
    square = x[:4].view(2, 2)
    assert overlap.overlap_status(square, square.t()) == overlap.PARTIAL


def test_messages_are_pytorchs() -> None:
    x = torch.zeros(5)
    with pytest.raises(RuntimeError) as partial:
        torch.neg(x[1:4], out=x[0:3])
    assert str(partial.value) == overlap.PARTIAL_OVERLAP_MESSAGE
    with pytest.raises(RuntimeError) as internal:
        torch.neg(x[:3], out=torch.zeros(1).expand(3))
    assert str(internal.value) == overlap.INTERNAL_OVERLAP_MESSAGE


def _spec(qualified: str):  # type: ignore[no-untyped-def]
    return next(s for s in overload_specs() if s.qualified == qualified)


def test_check_refuses_elementwise_and_leaves_reductions_and_functional_forms() -> None:
    x = torch.zeros(5, dtype=torch.complex64)
    exp_out = _spec("aten::exp.out")
    with pytest.raises(RuntimeError, match="some elements of the input tensor"):
        overlap.check(exp_out, {"self": x[1:4], "out": x[0:3]})
    with pytest.raises(RuntimeError, match="more than one element of the written-to"):
        overlap.check(exp_out, {"self": x[:3], "out": torch.zeros(1, dtype=x.dtype).expand(3)})
    overlap.check(exp_out, {"self": x, "out": x})  # out= the input itself
    mul_ = _spec("aten::mul_.Tensor")
    with pytest.raises(RuntimeError, match="some elements of the input tensor"):
        overlap.check(mul_, {"self": x[1:4], "other": x[0:3]})
    overlap.check(mul_, {"self": x, "other": x})
    # reductions check nothing; a functional overload writes nothing
    overlap.check(_spec("aten::prod.int_out"), {"self": x[1:5], "out": x[0:4]})
    overlap.check(_spec("aten::exp"), {"self": x})
    # abs of a complex input into a real out= goes through a temporary in PyTorch, too
    raw = torch.zeros(40, dtype=torch.uint8)
    z = raw[8:40].view(torch.complex64)
    real_out = raw[0:16].view(torch.float32)
    overlap.check(_spec("aten::abs.out"), {"self": z, "out": real_out})


def test_distinct_targets_keeps_the_last_write_along_broadcast_dimensions() -> None:
    target = torch.zeros(1, 3).expand(4, 3)
    result = torch.arange(12.0).reshape(4, 3)
    written, values = overlap.distinct_targets(target, result)
    written.copy_(values)
    assert torch.equal(target, result[3:].expand(4, 3))
    plain = torch.zeros(3)
    assert overlap.distinct_targets(plain, torch.ones(3))[0] is plain
