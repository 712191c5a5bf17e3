"""PyTorch's refusals of an output that shares memory with an input, for the guard's routes.

PyTorch's elementwise kernels (TensorIterator) check their operands before computing anything:
an output whose elements alias each other, or an output that partially overlaps one of the
inputs, is refused with a ``RuntimeError`` (``torch.exp2(x[1:4], out=x[0:3])``).  The guard's
rewrites compute into a new tensor and copy it out, and its CPU round trip copies the operands
first, so neither would see the overlap: :func:`check` makes the same decision, with the same
message, before either runs.

The decision follows ATen's ``MemoryOverlap.cpp``: an exact overlap (the same memory with the
same strides, e.g. ``out=x`` or an in-place op's own ``self``) is allowed; a partial one is
refused; when an operand is not dense the overlap is "too hard" to decide and PyTorch lets the
call run, and so does the guard.  Where PyTorch's kernels do not check, neither does
:func:`check`: reductions (``sum``, ``nansum``, ``prod``) check nothing (they write into an
``out=`` whatever its aliasing, see :func:`distinct_targets`), and ``abs``/``angle`` of a complex
input into a real ``out=`` compute into a temporary first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .spec import OverloadSpec

__all__ = [
    "FULL",
    "INTERNAL_OVERLAP_MESSAGE",
    "NO",
    "PARTIAL",
    "PARTIAL_OVERLAP_MESSAGE",
    "TOO_HARD",
    "YES",
    "check",
    "distinct_targets",
    "has_internal_overlap",
    "non_overlapping_and_dense",
    "overlap_status",
]

#: ``at::assert_no_internal_overlap``'s message.
INTERNAL_OVERLAP_MESSAGE = (
    "unsupported operation: more than one element of the written-to tensor refers to a single "
    "memory location. Please clone() the tensor before performing the operation."
)
#: ``at::assert_no_partial_overlap``'s message.
PARTIAL_OVERLAP_MESSAGE = (
    "unsupported operation: some elements of the input tensor and the written-to tensor refer "
    "to a single memory location. Please clone() the tensor before performing the operation."
)

# ATen's MemOverlapStatus / MemOverlap values, by name
NO = "no"
FULL = "full"
PARTIAL = "partial"
TOO_HARD = "too hard"
YES = "yes"

# Inventory entries whose kernels check no overlap at all (reductions).
_REDUCTIONS = frozenset(("sum", "nansum", "prod"))
# Entries whose kernels compute a complex input's real result into a temporary, then copy it.
_COMPLEX_TO_REAL_TEMPORARY = frozenset(("abs", "angle"))


def non_overlapping_and_dense(sizes: Sequence[int], strides: Sequence[int]) -> bool:
    """c10's ``compute_non_overlapping_and_dense``: the elements fill a block without gaps."""
    if len(sizes) == 1:
        return sizes[0] < 2 or strides[0] == 1
    # dimensions of size < 2 last, the others by increasing stride (a stable sort, as c10's)
    order = sorted(
        range(len(sizes)), key=lambda d: (sizes[d] < 2, strides[d] if sizes[d] >= 2 else 0)
    )
    required = 1
    for d in order:
        if sizes[d] < 2:
            return True
        if strides[d] != required:
            return False
        required *= sizes[d]
    return True


def _dense(t: Any) -> bool:
    return t.is_contiguous() or non_overlapping_and_dense(t.shape, t.stride())


def has_internal_overlap(t: Any) -> str:
    """:data:`NO`, :data:`YES` (some elements alias each other) or :data:`TOO_HARD`, as
    ``at::has_internal_overlap``."""
    if _dense(t):
        return NO
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride == 0 and size > 1:
            return YES
    return TOO_HARD


def overlap_status(a: Any, b: Any) -> str:
    """:data:`NO`, :data:`FULL`, :data:`PARTIAL` or :data:`TOO_HARD`, as ATen's
    ``get_overlap_status``."""
    if a is b:
        return FULL
    if a.numel() == 0 or b.numel() == 0:
        return NO
    if not _dense(a) or not _dense(b):
        return TOO_HARD
    if a.device != b.device:
        return NO
    storage = a.untyped_storage()
    if storage.data_ptr() != b.untyped_storage().data_ptr() or storage.data_ptr() == 0:
        return NO
    a_begin = a.data_ptr()
    a_end = a_begin + a.numel() * a.element_size()
    b_begin = b.data_ptr()
    b_end = b_begin + b.numel() * b.element_size()
    if a_begin == b_begin and a_end == b_end:
        return FULL if a.stride() == b.stride() else PARTIAL
    if a_begin < b_end and b_begin < a_end:
        return PARTIAL
    return NO


def check(spec: OverloadSpec, bound: dict[str, Any]) -> None:
    """Raise PyTorch's ``RuntimeError`` if the call's output overlaps as PyTorch refuses.

    *bound* is the call's arguments by schema name.  Nothing is checked for an overload that
    writes nothing.
    """
    if not spec.mutable:
        return
    import torch  # torch is imported lazily throughout the package (import cost)

    written = [bound[name] for name in spec.mutable if isinstance(bound.get(name), torch.Tensor)]
    if not written:
        return
    entry = spec.entry.name
    if entry in _REDUCTIONS:
        return
    for output in written:
        if has_internal_overlap(output) == YES:
            raise RuntimeError(INTERNAL_OVERLAP_MESSAGE)
    inputs = [
        value
        for name, value in bound.items()
        if name not in spec.mutable and isinstance(value, torch.Tensor)
    ]
    if spec.mutable[0] == "self":
        inputs.insert(0, bound["self"])
    for output in written:
        if entry in _COMPLEX_TO_REAL_TEMPORARY and not output.is_complex():
            source = bound.get("self")
            if isinstance(source, torch.Tensor) and source.is_complex():
                continue
        for value in inputs:
            if overlap_status(output, value) == PARTIAL:
                raise RuntimeError(PARTIAL_OVERLAP_MESSAGE)


def distinct_targets(target: Any, result: Any) -> tuple[Any, Any]:
    """``(target, result)`` narrowed so that no two elements of *target* share memory.

    ``Tensor.copy_`` refuses a destination whose elements alias each other; the reductions
    write into such an ``out=`` without a check (one value lands in each memory location).
    Along every broadcast dimension (stride 0), only the last element is kept: the value the
    last write leaves there.  Anything else comes back unchanged.
    """
    if has_internal_overlap(target) != YES:
        return target, result
    for dim, (size, stride) in enumerate(zip(target.shape, target.stride(), strict=True)):
        if stride == 0 and size > 1:
            target = target.narrow(dim, size - 1, 1)
            result = result.narrow(dim, size - 1, 1)
    return target, result
