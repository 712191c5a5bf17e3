"""Which ATen overloads of the installed torch the dispatcher kernel is registered for.

Every overload of an inventory entry's packets (and their in-place twins) that has its own CPU
or CUDA kernel (``BackendSelect`` for factory ops), plus the composite overloads an entry names.
"""

from __future__ import annotations

import functools
from typing import Any

from . import inventory
from .rules import DTYPE_RULES
from .spec import OverloadSpec


def _tensor_slots(op: Any) -> tuple[int, ...]:
    slots = []
    for index, arg in enumerate(op._schema.arguments):
        if arg.kwarg_only:
            break
        if str(arg.type) in ("Tensor", "Tensor?"):
            slots.append(index)
    return tuple(slots)


def _schema_info(
    op: Any,
) -> tuple[tuple[str, ...], frozenset[str], dict[str, Any], tuple[str, ...], bool]:
    schema = op._schema
    names: list[str] = []
    kwarg_only: set[str] = set()
    defaults: dict[str, Any] = {}
    mutable: list[str] = []
    for arg in schema.arguments:
        names.append(arg.name)
        if arg.kwarg_only:
            kwarg_only.add(arg.name)
        if arg.has_default_value():
            defaults[arg.name] = arg.default_value
        alias = arg.alias_info
        if alias is not None and alias.is_write:
            mutable.append(arg.name)
    positional = tuple(n for n in names if n not in kwarg_only)
    returns_alias = any(r.alias_info is not None for r in schema.returns)
    return positional, frozenset(kwarg_only), defaults, tuple(mutable), returns_alias


def torch_dtypes(names: frozenset[str]) -> frozenset[Any]:
    """The torch dtypes of the inventory's dtype *names* (those the installed torch has)."""
    import torch  # torch is imported lazily throughout the package (import cost)

    return frozenset(getattr(torch, name) for name in names if hasattr(torch, name))


def _has_backend_kernel(qualified: str, keys: tuple[str, ...]) -> bool:
    import torch

    for key in keys:
        try:
            if torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key):
                return True
        except RuntimeError:  # not a real ATen overload (TorchScript-only)
            return False
    return False


@functools.lru_cache(maxsize=1)
def overload_specs() -> tuple[OverloadSpec, ...]:
    """Every overload intercepted for the installed torch (computed once)."""
    import torch

    version = torch.__version__
    specs: list[OverloadSpec] = []
    for entry in inventory.entries(version):
        dtypes = torch_dtypes(entry.dtypes)
        rule = DTYPE_RULES[entry.rule]
        for packet_name in inventory.packets(entry):
            packet = getattr(torch.ops.aten, packet_name, None)
            if packet is None:
                continue
            for overload in packet.overloads():
                qualified = f"aten::{packet_name}" + (
                    "" if overload == "default" else f".{overload}"
                )
                factory = entry.rule == "factory"
                if factory:
                    if overload.endswith("out") or not _has_backend_kernel(
                        qualified, ("BackendSelect",)
                    ):
                        continue
                elif qualified not in entry.composite and not _has_backend_kernel(
                    qualified, ("CPU", "CUDA")
                ):
                    continue
                op = getattr(packet, overload)
                names, kwarg_only, defaults, mutable, returns_alias = _schema_info(op)
                specs.append(
                    OverloadSpec(
                        entry=entry,
                        qualified=qualified,
                        impl_name=qualified.split("::", 1)[1],
                        packet=packet_name,
                        overload=overload,
                        op=op,
                        arg_names=names,
                        kwarg_only=kwarg_only,
                        defaults=defaults,
                        mutable=mutable,
                        returns_alias=returns_alias,
                        dtypes=dtypes,
                        rule=rule,
                        factory=factory,
                        tensor_slots=_tensor_slots(op),
                        complex_only=entry.dtypes <= inventory.COMPLEX,
                    )
                )
    return tuple(specs)
