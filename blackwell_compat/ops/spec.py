"""What the dispatcher kernel knows about an intercepted ATen overload, and its call records.

:class:`OverloadSpec` describes one overload (schema, jitted dtypes, the rule deciding the
dtype); :class:`JitCall` is the record of one call that reaches (or would reach) a Jiterator
kernel, handed to ``audit``'s recorder and to the emulated error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .inventory import SOURCE_ROOT, JitOp

#: :attr:`JitCall.mode` of a call the op guard computes without the Jiterator.
MODE_GUARD = "guard"
#: :attr:`JitCall.mode` of a call that fails (or, under ``audit``, is recorded) as on an affected
#: GPU.  (Not to be confused with ``config.EMULATE``, the variable that turns emulation on.)
MODE_EMULATE = "emulate"
#: :attr:`JitCall.mode` of a fused kernel the GPU would not fuse (the fuser is off: the fuser
#: rung, or the user's own switch).
MODE_FUSER = "fuser"
#: :attr:`JitCall.mode` of a fused or user Jiterator kernel a capable NVRTC (the remedy) compiles.
MODE_REMEDY = "remedy"


@dataclass(frozen=True)
class JitCall:
    """One call that reaches a Jiterator kernel (or would, on an affected GPU)."""

    op: str
    """The ATen overload, e.g. ``aten::abs.out``."""
    entry: str
    """The inventory entry, e.g. ``abs``."""
    dtype: str
    """The dtype that selects the jitted kernel, e.g. ``complex64``."""
    shapes: tuple[tuple[int, ...], ...]
    """Shapes of the tensor arguments, in order."""
    device: str
    kernels: tuple[str, ...]
    source: str
    mode: str = MODE_EMULATE
    """``emulate`` (would fail) or ``guard`` (rewritten by the op guard); fused and user
    kernels also ``fuser`` or ``remedy`` (the rung that serves them)."""
    fused_ops: tuple[str, ...] = ()
    """The ATen ops of a fused kernel (:mod:`blackwell_compat.fused_kernels`), else empty."""

    @property
    def kernel(self) -> str:
        return self.kernels[0] if self.kernels else self.entry


@dataclass
class OverloadSpec:
    """An ATen overload the kernel is registered for, with what the kernel needs to know."""

    entry: JitOp
    qualified: str
    """``aten::abs.out``"""
    impl_name: str
    """``abs.out`` (what ``Library.impl`` takes)."""
    packet: str
    overload: str
    op: Any
    arg_names: tuple[str, ...]
    kwarg_only: frozenset[str]
    defaults: dict[str, Any]
    mutable: tuple[str, ...]
    """Arguments the op writes to (``out``, or ``self`` for in-place ops)."""
    returns_alias: bool
    dtypes: frozenset[Any]
    rule: Callable[[OverloadSpec, tuple[Any, ...], dict[str, Any]], Any]
    factory: bool = False
    tensor_slots: tuple[int, ...] = ()
    """Positions of ``Tensor`` parameters (numbers there must be turned back into tensors)."""
    complex_only: bool = False
    """Every jitted dtype is complex: a call without a complex operand, ``dtype=`` or ``out=``
    is decided without running the rule (the common, fast case)."""

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Arguments by schema name (defaults filled in)."""
        bound = dict(self.defaults)
        for name, value in zip(self.arg_names, args, strict=False):
            bound[name] = value
        bound.update(kwargs)
        return bound

    def jit_dtype(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The dtype that selects a jitted kernel for this call, or ``None``."""
        dtype = self.rule(self, args, kwargs)
        if dtype is None or dtype not in self.dtypes:
            return None
        return dtype


def _shapes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[int, ...], ...]:
    import torch  # torch is imported lazily throughout the package (import cost)

    return tuple(tuple(v.shape) for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))


def make_call(
    spec: OverloadSpec,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    dtype: Any,
    device: Any,
    mode: str,
) -> JitCall:
    return JitCall(
        op=spec.qualified,
        entry=spec.entry.name,
        dtype=str(dtype).replace("torch.", ""),
        shapes=_shapes(args, kwargs),
        device=str(device),
        kernels=spec.entry.kernels,
        source=SOURCE_ROOT + spec.entry.source,
        mode=mode,
    )
