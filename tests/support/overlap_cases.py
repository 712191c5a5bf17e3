"""``out=`` and in-place calls whose tensors share memory, for every intercepted ATen overload.

PyTorch refuses some of them before computing anything (an output that partially overlaps an
input, an output whose elements alias each other) and computes the others.  ``cases(spec,
dtype)`` builds, for one overload and one dtype, every arrangement of shared memory listed in
:data:`ARRANGEMENTS`; each case is a function that makes fresh tensors (views of one new storage,
filled with values in the op's domain) and calls the overload on them, so the same case can run
once under the op guard and once with PyTorch's own kernel and the two outcomes be compared.

The arrangements whose result depends on the order in which a kernel visits the elements (a
non-dense output interleaved with its input) are left out: PyTorch documents no result for
them.  Every other arrangement has one defined outcome: a refusal, or the elementwise result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from blackwell_compat.ops.spec import OverloadSpec

#: How the written-to tensor (``out=``, or ``self`` of an in-place op) shares memory with the
#: tensor it is checked against.  Elements counted in the written-to tensor's own dtype.
ARRANGEMENTS = (
    "partial",  # shifted by one element: x[1:5] -> out x[0:4]
    "partial-after",  # shifted the other way: x[0:4] -> out x[1:5]
    "identity",  # the very same tensor object (out=x, or an in-place op's own self)
    "same-view",  # another view with the same offset, shape and strides (full overlap)
    "transposed",  # the same memory with other strides: x -> out x.t() (partial overlap)
    "internal",  # an output whose elements alias each other (expand)
    "disjoint",  # the same storage, separate halves (no overlap)
    "interleaved",  # non-dense views of one storage that share no element
)

SHAPE = (4, 4)


@dataclass(frozen=True)
class Case:
    overload: str
    dtype: torch.dtype
    arrangement: str
    role: str
    """The argument the written-to tensor shares memory with (``-`` for ``internal``)."""
    run: Callable[[], Any]
    """Makes fresh tensors and calls the overload; returns ``(result, written, inputs)``."""

    @property
    def id(self) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        return f"{self.overload}-{dtype}-{self.arrangement}-{self.role}"


def _values(dtype: torch.dtype, count: int, seed: int) -> torch.Tensor:
    """Values in (0.1, 0.9) (real and imaginary parts), or small integers; deterministic."""
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        parts = torch.rand(count, 2, generator=g, dtype=torch.float64) * 0.8 + 0.1
        return torch.view_as_complex(parts).to(dtype)
    if dtype.is_floating_point:
        return (torch.rand(count, generator=g, dtype=torch.float64) * 0.8 + 0.1).to(dtype)
    if dtype == torch.bool:
        return torch.rand(count, generator=g) > 0.5
    return torch.randint(1, 40, (count,), generator=g).to(dtype)


def _storage_tensor(dtype: torch.dtype, count: int, seed: int, device: str) -> torch.Tensor:
    return _values(dtype, count, seed).clone().to(device)


def _view(base: torch.Tensor, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> Any:
    return base.as_strided(shape, stride, offset)


def _contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    stride, step = [], 1
    for size in reversed(shape):
        stride.append(step)
        step *= size
    return tuple(reversed(stride))


@dataclass(frozen=True)
class _Layout:
    """Where the written-to tensor and the shared input lie in one storage (element units)."""

    input_offset: int
    input_stride: tuple[int, ...] | None  # None: contiguous
    out_offset: int
    out_stride: tuple[int, ...] | None
    size: int


def _layout(arrangement: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> _Layout:
    n_in = _numel(in_shape)
    n_out = _numel(out_shape)
    if arrangement == "partial":
        return _Layout(1, None, 0, None, max(n_in + 1, n_out))
    if arrangement == "partial-after":
        return _Layout(0, None, 1, None, max(n_in, n_out + 1))
    if arrangement == "same-view":
        return _Layout(0, None, 0, None, max(n_in, n_out))
    if arrangement == "disjoint":
        return _Layout(0, None, n_in, None, n_in + n_out)
    if arrangement == "interleaved":
        return _Layout(
            0,
            tuple(2 * s for s in _contiguous_stride(in_shape)),
            1,
            tuple(2 * s for s in _contiguous_stride(out_shape)),
            2 * max(n_in, n_out),
        )
    if arrangement == "transposed":
        return _Layout(0, None, 0, tuple(reversed(_contiguous_stride(out_shape))), n_in)
    raise ValueError(arrangement)


def _numel(shape: tuple[int, ...]) -> int:
    result = 1
    for size in shape:
        result *= size
    return result


# -- arguments -------------------------------------------------------------------------------------


def _scalar_for(spec: OverloadSpec, name: str, dtype: torch.dtype) -> Any:
    entry = spec.entry.name
    if entry == "pow":
        if name == "self":  # pow.Scalar_out: number ** tensor (jitted for complex32 only)
            return 2
        return 0.5  # jitted for every complex dtype (complex32: any exponent)
    if entry == "lerp":
        return 0.3
    return 1


def _base_args(spec: OverloadSpec, dtype: torch.dtype, shape: tuple[int, ...]) -> dict[str, Any]:
    """Schema name -> value: tensors of *shape* in *dtype* (placeholders), numbers, options."""
    args: dict[str, Any] = {}
    for arg in spec.op._schema.arguments:
        kind = str(arg.type)
        name = arg.name
        if name in spec.mutable and not (spec.mutable[0] == "self" and name == "self"):
            continue
        if kind in ("Tensor", "Tensor?"):
            args[name] = ("tensor", dtype)
        elif kind in ("Scalar", "number"):
            args[name] = _scalar_for(spec, name, dtype)
        elif kind == "int" and name == "n":
            args[name] = 2
        elif kind == "int" and name == "dim":
            args[name] = 0
        elif "List[int]" in kind or kind.startswith("int["):
            args[name] = [0]
        elif kind.startswith("Optional["):
            args[name] = None
        elif kind == "bool":
            args[name] = False
        elif arg.has_default_value():
            args[name] = arg.default_value
        else:
            raise ValueError(f"{spec.qualified}: no sample value for {name}: {kind}")
    return args


def _result_meta(spec: OverloadSpec, dtype: torch.dtype) -> tuple[torch.dtype, tuple[int, ...]]:
    """The functional result's dtype and shape for *dtype* inputs (PyTorch's meta kernels: the
    CPU lacks some, e.g. complex32 and complex ``nansum``)."""
    args = _materialise(spec, _base_args(spec, dtype, SHAPE), {}, seed=0)
    meta = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    result = _functional(spec)(**meta)
    return result.dtype, tuple(result.shape)


_FUNCTIONAL_OVERLOADS = {
    "out": "default",
    "grad_input": "default",
    "Scalar_out": "Scalar",
    "Tensor_out": "Tensor",
    "Tensor_Scalar_out": "Tensor_Scalar",
    "Tensor_Tensor_out": "Tensor_Tensor",
    "IntList_out": "dim_IntList",
    "int_out": "dim_int",
    "out_mode": "Tensor_mode",
}


def _functional(spec: OverloadSpec) -> Callable[..., Any]:
    """The functional overload of an ``out=`` overload (``abs.out`` -> ``abs``), by keyword."""
    packet = getattr(torch.ops.aten, spec.packet)
    overload = _FUNCTIONAL_OVERLOADS[spec.overload]
    if spec.packet in ("mul", "div") and overload == "default":
        overload = "Tensor"
    op = getattr(packet, overload)
    names = [a.name for a in op._schema.arguments if not a.kwarg_only]

    def call(**kwargs: Any) -> Any:
        positional = [kwargs.pop(name) for name in names if name in kwargs]
        return op(*positional, **kwargs)

    return call


def _materialise(
    spec: OverloadSpec,
    args: dict[str, Any],
    given: dict[str, torch.Tensor],
    seed: int,
    device: str = "cpu",
) -> dict[str, Any]:
    result = {}
    for index, (name, value) in enumerate(args.items()):
        if name in given:
            result[name] = given[name]
        elif isinstance(value, tuple) and value and value[0] == "tensor":
            count = _numel(SHAPE)
            result[name] = _storage_tensor(value[1], count, seed + index, device).reshape(SHAPE)
        else:
            result[name] = value
    return result


def _call(spec: OverloadSpec, args: dict[str, Any]) -> Any:
    positional = []
    kwargs = {}
    for arg in spec.op._schema.arguments:
        if arg.name not in args:
            continue
        if arg.kwarg_only:
            kwargs[arg.name] = args[arg.name]
        else:
            positional.append(args[arg.name])
    return spec.op(*positional, **kwargs)


def tensor_roles(spec: OverloadSpec) -> list[str]:
    """The tensor arguments the written-to tensor is checked against (in-place: not self)."""
    roles = []
    for arg in spec.op._schema.arguments:
        if str(arg.type) not in ("Tensor", "Tensor?"):
            continue
        if arg.name in spec.mutable:
            continue
        roles.append(arg.name)
    return roles


def cases(spec: OverloadSpec, dtype: torch.dtype, device: str = "cpu") -> list[Case]:
    """Every arrangement of shared memory for one overload and dtype (see the module doc), with
    the tensors on *device* (``cuda``: the emulated CUDA device, inside its emulation)."""
    inplace = bool(spec.mutable) and spec.mutable[0] == "self"
    written = spec.mutable[0]
    if inplace:
        out_dtype, out_shape = dtype, SHAPE
    else:
        out_dtype, out_shape = _result_meta(spec, dtype)
    result: list[Case] = []
    roles = tensor_roles(spec)
    for arrangement in ARRANGEMENTS:
        if arrangement == "internal":
            result.append(_internal_case(spec, dtype, out_dtype, out_shape, written, device))
            continue
        if arrangement == "identity":
            if inplace:
                # the op's own self is its input: a plain in-place call, and self passed again
                result.append(_identity_case(spec, dtype, written, None, device))
                for role in roles:
                    result.append(_identity_case(spec, dtype, written, role, device))
            else:
                for role in roles:
                    if out_dtype == _base_args(spec, dtype, SHAPE)[role][1] and out_shape == SHAPE:
                        result.append(_identity_case(spec, dtype, written, role, device))
            continue
        for role in roles:
            in_dtype = _base_args(spec, dtype, SHAPE)[role][1]
            if in_dtype.itemsize != out_dtype.itemsize:
                # one storage for both needs elements of one size; a complex input and its real
                # result are covered by 'partial' on the byte level below
                result.append(
                    _mixed_case(spec, dtype, arrangement, role, out_dtype, out_shape, device)
                )
                continue
            result.append(
                _shared_case(spec, dtype, arrangement, role, out_dtype, out_shape, device)
            )
    return [case for case in result if case is not None]


def _finish(spec: OverloadSpec, args: dict[str, Any]) -> tuple[Any, torch.Tensor, dict[str, Any]]:
    written = args[spec.mutable[0]]
    result = _call(spec, args)
    return result, written, args


def _shared_case(
    spec: OverloadSpec,
    dtype: torch.dtype,
    arrangement: str,
    role: str,
    out_dtype: torch.dtype,
    out_shape: tuple[int, ...],
    device: str,
) -> Case | None:
    base = _base_args(spec, dtype, SHAPE)
    in_dtype = base[role][1]
    if arrangement == "transposed" and (len(out_shape) != 2 or out_shape[0] != out_shape[1]):
        return None
    layout = _layout(arrangement, SHAPE, out_shape)
    written_name = spec.mutable[0]

    def run() -> Any:
        storage = _storage_tensor(in_dtype, layout.size, 7, device)
        x = _view(
            storage, layout.input_offset, SHAPE, layout.input_stride or _contiguous_stride(SHAPE)
        )
        if out_dtype != in_dtype:
            storage_out = storage.view(out_dtype)
        else:
            storage_out = storage
        out = _view(
            storage_out,
            layout.out_offset,
            out_shape,
            layout.out_stride or _contiguous_stride(out_shape),
        )
        args = _materialise(spec, base, {role: x, written_name: out}, 11, device)
        args[written_name] = out
        return _finish(spec, args)

    return Case(spec.qualified, dtype, arrangement, role, run)


def _mixed_case(
    spec: OverloadSpec,
    dtype: torch.dtype,
    arrangement: str,
    role: str,
    out_dtype: torch.dtype,
    out_shape: tuple[int, ...],
    device: str,
) -> Case | None:
    """Input and output of different element sizes in one storage (complex in, real out)."""
    if arrangement not in ("partial", "partial-after", "same-view", "disjoint"):
        return None
    base = _base_args(spec, dtype, SHAPE)
    in_dtype = base[role][1]
    written_name = spec.mutable[0]
    n_in = _numel(SHAPE) * in_dtype.itemsize
    n_out = _numel(out_shape) * out_dtype.itemsize
    unit = max(in_dtype.itemsize, out_dtype.itemsize)
    offsets = {
        "partial": (unit, 0),
        "partial-after": (0, unit),
        "same-view": (0, 0),
        "disjoint": (0, n_in),
    }[arrangement]
    size = max(offsets[0] + n_in, offsets[1] + n_out)
    size += (-size) % unit

    def run() -> Any:
        raw = torch.zeros(size, dtype=torch.uint8, device=device)
        x = raw[offsets[0] : offsets[0] + n_in].view(in_dtype).reshape(SHAPE)
        x.copy_(_values(in_dtype, _numel(SHAPE), 7).reshape(SHAPE).to(device))
        out = raw[offsets[1] : offsets[1] + n_out].view(out_dtype).reshape(out_shape)
        args = _materialise(spec, base, {role: x, written_name: out}, 11, device)
        args[written_name] = out
        return _finish(spec, args)

    return Case(spec.qualified, dtype, arrangement, role, run)


def _identity_case(
    spec: OverloadSpec, dtype: torch.dtype, written_name: str, role: str | None, device: str
) -> Case:
    base = _base_args(spec, dtype, SHAPE)

    def run() -> Any:
        args = _materialise(spec, base, {}, 11, device)
        if written_name not in args:
            args[written_name] = args[role] if role is not None else None
        elif role is not None:
            args[role] = args[written_name]
        return _finish(spec, args)

    if written_name != "self":
        # out= the input itself: the input is made as the written-to tensor
        def run_out() -> Any:
            args = _materialise(spec, base, {}, 11, device)
            args[written_name] = args[role]
            return _finish(spec, args)

        return Case(spec.qualified, dtype, "identity", role or "self", run_out)
    return Case(spec.qualified, dtype, "identity", role or "self", run)


def _internal_case(
    spec: OverloadSpec,
    dtype: torch.dtype,
    out_dtype: torch.dtype,
    out_shape: tuple[int, ...],
    written_name: str,
    device: str,
) -> Case:
    base = _base_args(spec, dtype, SHAPE)

    def run() -> Any:
        args = _materialise(spec, base, {}, 11, device)
        if written_name == "self":
            one = _values(dtype, 1, 3).reshape((1,) * len(SHAPE)).to(device)
            args["self"] = one.expand(SHAPE)
        else:
            one = torch.zeros((1,) * len(out_shape), dtype=out_dtype, device=device)
            args[written_name] = one.expand(out_shape)
        return _finish(spec, args)

    return Case(spec.qualified, dtype, "internal", "-", run)


def outcome(case: Case) -> tuple[str, Any]:
    """``("raised", (type, message))`` or ``("result", (result, written, inputs))``."""
    try:
        value = case.run()
    except Exception as exc:  # the refusal is the outcome being compared
        return "raised", (type(exc), str(exc).split("\n")[0])
    return "result", value
