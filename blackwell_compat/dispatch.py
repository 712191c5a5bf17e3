"""One dispatcher kernel per Jiterator-bound ATen overload, shared by the op guard and emulation.

``torch.library`` refuses a second Python kernel for the same op and dispatch key, so the guard
and the emulation cannot each register their own.  This module owns the only registration and
decides, call by call, between three outcomes:

* the op guard is on and the call is on a targeted device -> a Jiterator-free rewrite
  (:mod:`blackwell_compat.rewrites`);
* emulation is on, the guard is not, and the call is on a CPU tensor -> the ``RuntimeError`` an
  affected GPU raises (or, for ``audit``, a record and the correct result);
* anything else (another dtype, another device, an empty tensor) -> the original kernel,
  unchanged.

Two ways of registering exist, chosen by the installed torch:

``backend`` (torch >= 2.9)
    The kernel is registered at the backend keys, ``CPU`` (needed while emulation is active) and
    ``CUDA`` (needed while the guard is applied).  The original kernel is captured with
    ``torch.library.get_kernel`` and called with ``call_boxed``.
``backend-select`` (older torch, no ``get_kernel``)
    The kernel is registered at ``BackendSelect``, the dispatch key every call passes through
    just below autograd and just above the backend kernels (it is in the default included
    set, also under ``inference_mode``).  The original kernel is reached by re-dispatching to
    the keys after ``BackendSelect``.  One registration serves every device.

Either way the kernel sits in the dispatcher: every thread and every C++ call site goes through
it, and composite ops reach it after they decomposed, so it sees exactly the kernels that would
run on the device.  Nothing here is thread-local except the "calling an original kernel" depth
that keeps recursion out of the original kernels.
"""

from __future__ import annotations

import functools
import math
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import devices, emulation, inventory
from .errors import logger

BACKEND = "backend"
BACKEND_SELECT = "backend-select"
STRATEGIES = (BACKEND, BACKEND_SELECT)

GUARD = "guard"
EMULATE = "emulate"

_lock = threading.RLock()


class _ThreadState(threading.local):
    bypass = 0  # depth of calls into original kernels; a class default keeps reads fast


_local = _ThreadState()

_guard_enabled = False
_recorder: Callable[[JitCall], None] | None = None
_strategy_override: str | None = None
_hook_registered = False

# key ("CPU", "CUDA" or "BackendSelect") -> installed registration
_installed: dict[str, _Registration] = {}


# -- public state --------------------------------------------------------------------------------


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
    mode: str = EMULATE
    """``emulate`` (would fail) or ``guard`` (rewritten by the op guard)."""

    @property
    def kernel(self) -> str:
        return self.kernels[0] if self.kernels else self.entry


def guard_enabled() -> bool:
    return _guard_enabled


def strategy() -> str:
    """The registration strategy in use (see the module docstring)."""
    if _strategy_override is not None:
        return _strategy_override
    import torch

    return BACKEND if hasattr(torch.library, "get_kernel") else BACKEND_SELECT


def set_strategy(name: str | None) -> None:
    """Force a strategy (tests, diagnostics); ``None`` goes back to automatic.

    Re-registers whatever is installed.  ``backend`` needs torch >= 2.9.
    """
    global _strategy_override
    if name is not None and name not in STRATEGIES:
        from .errors import ConfigError

        raise ConfigError(f"unknown dispatch strategy {name!r}; use one of {STRATEGIES}")
    with _lock:
        if name == BACKEND:
            import torch

            if not hasattr(torch.library, "get_kernel"):
                from .errors import ConfigError

                raise ConfigError(
                    f"the {BACKEND!r} strategy needs torch.library.get_kernel (torch >= 2.9); "
                    f"torch {torch.__version__} has none"
                )
        _uninstall_all()
        _strategy_override = name
        sync()


def enable_guard() -> None:
    """Turn the op guard on (called by the ``torch`` patch) and register what it needs."""
    global _guard_enabled
    with _lock:
        _guard_enabled = True
        sync()


def disable_guard() -> None:
    """Turn the op guard off and remove the registrations only it needed."""
    global _guard_enabled
    with _lock:
        _guard_enabled = False
        sync()


def set_recorder(recorder: Callable[[JitCall], None] | None) -> Callable[[JitCall], None] | None:
    """Record calls instead of raising under emulation (``audit``); returns the previous one.

    While a recorder is set, an emulated call is reported to it and then computed with the
    original kernel, so the program continues with the correct result.  Calls rewritten by
    the guard are reported too, with ``mode="guard"``.
    """
    global _recorder
    with _lock:
        previous = _recorder
        _recorder = recorder
        return previous


@contextmanager
def bypass() -> Iterator[None]:
    """Calls made in this thread inside the block reach the original kernels."""
    depth = _local.bypass
    _local.bypass = depth + 1
    try:
        yield
    finally:
        _local.bypass = depth


def bypassing() -> bool:
    return bool(_local.bypass)


# -- installation -------------------------------------------------------------------------------


def ensure_installed_when_torch_imported() -> None:
    """Register what the current state needs now if torch is imported, else when it is."""
    import sys

    global _hook_registered
    if "torch" in sys.modules:
        sync()
        return
    with _lock:
        if _hook_registered:
            return
        _hook_registered = True
    import wrapt

    def on_torch(module: types.ModuleType) -> None:
        global _hook_registered
        _hook_registered = False
        try:
            sync()
        except Exception as exc:  # never break `import torch`
            logger.warning("blackwell-compat: installing the dispatcher kernels failed: %s", exc)

    wrapt.register_post_import_hook(on_torch, "torch")


def _wanted_keys() -> set[str]:
    cpu = emulation.is_active()
    cuda = _guard_enabled
    if strategy() == BACKEND_SELECT:
        return {"BackendSelect"} if (cpu or cuda) else set()
    keys = set()
    if cpu:
        keys.add("CPU")
    if cuda:
        keys.add("CUDA")
    return keys


def sync() -> None:
    """Make the installed registrations match what the guard and emulation need.

    Does nothing before torch is imported (the post-import hook calls it later).
    """
    import sys

    if "torch" not in sys.modules:
        return
    with _lock:
        wanted = _wanted_keys()
        for key in list(_installed):
            if key not in wanted:
                _installed.pop(key).destroy()
        for key in sorted(wanted):
            if key not in _installed:
                _installed[key] = _Registration.create(key)


def _uninstall_all() -> None:
    with _lock:
        for key in list(_installed):
            _installed.pop(key).destroy()


def installed_keys() -> list[str]:
    with _lock:
        return sorted(_installed)


def status() -> dict[str, Any]:
    """What is registered, for ``status()`` notes, the doctor and tests."""
    with _lock:
        result: dict[str, Any] = {
            "guard": _guard_enabled,
            "emulation": emulation.current_arch(),
            "keys": {key: len(reg.specs) for key, reg in _installed.items()},
        }
        import sys

        if "torch" in sys.modules:
            result["strategy"] = strategy()
        problems = [p for reg in _installed.values() for p in reg.problems]
        if problems:
            result["problems"] = problems
        return result


# -- overload discovery --------------------------------------------------------------------------


@dataclass
class OverloadSpec:
    """An ATen overload the kernel is registered for, with what the kernel needs to know."""

    entry: inventory.JitOp
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


def _torch_dtypes(names: frozenset[str]) -> frozenset[Any]:
    import torch

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

    from .rewrites import rules

    version = torch.__version__
    specs: list[OverloadSpec] = []
    for entry in inventory.entries(version):
        dtypes = _torch_dtypes(entry.dtypes)
        rule = rules.RULES[entry.rule]
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


# -- the kernel ----------------------------------------------------------------------------------

Original = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]


def _call_device(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The device the call runs on: the first non-CPU tensor argument, else CPU."""
    import torch

    if spec.factory:
        device = kwargs.get("device")
        if device is None:
            return torch.get_default_device() if hasattr(torch, "get_default_device") else None
        return torch.device(device)
    first = None
    for arg in args:
        if isinstance(arg, torch.Tensor):
            if arg.device.type != "cpu":
                return arg.device
            if first is None:
                first = arg.device
    if first is None:
        for value in kwargs.values():
            if isinstance(value, torch.Tensor):
                return value.device
    return first


def _has_empty_input(args: tuple[Any, ...]) -> bool:
    import torch

    return any(isinstance(a, torch.Tensor) and a.numel() == 0 for a in args)


def _shapes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[int, ...], ...]:
    import torch

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
        source=inventory.SOURCE_ROOT + spec.entry.source,
        mode=mode,
    )


def _decide(
    spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str | None, Any, Any]:
    """``(mode, dtype, device)``; mode ``None`` means: call the original kernel."""
    if _local.bypass:
        return None, None, None
    device = _call_device(spec, args, kwargs)
    if device is None:
        return None, None, None
    kind = device.type
    if kind == "cuda":
        if not _guard_enabled or not devices.device_targeted(device):
            return None, None, None
        mode = GUARD
    elif kind == "cpu":
        if not emulation.is_active():
            return None, None, None
        mode = GUARD if _guard_enabled else EMULATE
    else:
        return None, None, None
    dtype = spec.jit_dtype(args, kwargs)
    if dtype is None or _has_empty_input(args):
        return None, None, None
    return mode, dtype, device


def make_kernel(spec: OverloadSpec, original: Original) -> Callable[..., Any]:
    """The Python kernel registered for *spec*; *original* runs the captured kernel.

    Most calls reach a kernel for a dtype the Jiterator never compiles (a float32 ``mul``), and
    must cost as little as possible: for overloads whose jitted dtypes are all complex, a call
    without a complex operand (tensor, Python number or ``dtype=`` argument) goes straight to
    the original kernel, before any device or state is looked at.
    """
    from . import rewrites

    def call_original(keyset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with bypass():
            return original(keyset, args, kwargs)

    complex_only = spec.complex_only
    complex_dtypes = _complex_dtypes()

    def kernel(keyset: Any, *args: Any, **kwargs: Any) -> Any:
        if complex_only:
            for arg in args:
                if arg.__class__ is complex or getattr(arg, "dtype", None) in complex_dtypes:
                    break
            else:
                if (
                    kwargs.get("dtype") not in complex_dtypes
                    and getattr(kwargs.get("out"), "dtype", None) not in complex_dtypes
                ):
                    return original(keyset, args, kwargs)
        mode, dtype, device = _decide(spec, args, kwargs)
        if mode is None:
            return original(keyset, args, kwargs)
        recorder = _recorder
        if mode == GUARD:
            if recorder is not None:
                recorder(make_call(spec, args, kwargs, dtype, device, GUARD))
            return rewrites.run(spec, keyset, args, kwargs, device, call_original)
        call = make_call(spec, args, kwargs, dtype, device, EMULATE)
        if recorder is not None:
            recorder(call)
            return call_original(keyset, args, kwargs)
        raise emulation.jiterator_error(call)

    kernel.__name__ = f"blackwell_compat_{spec.packet}_{spec.overload}"
    kernel.__qualname__ = kernel.__name__
    return kernel


@functools.lru_cache(maxsize=1)
def _tensor_type() -> Any:
    import torch

    return torch.Tensor


@functools.lru_cache(maxsize=1)
def _complex_dtypes() -> frozenset[Any]:
    import torch

    return frozenset((torch.complex32, torch.complex64, torch.complex128))


# -- registration ---------------------------------------------------------------------------------


@dataclass
class _Registration:
    """The ``torch.library.Library`` holding this module's kernels for one dispatch key."""

    key: str
    library: Any
    specs: list[OverloadSpec] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, key: str) -> _Registration:
        import torch

        library_type: Any = torch.library.Library
        library = library_type("aten", "IMPL")
        reg = cls(key=key, library=library)
        with warnings.catch_warnings():
            # Overriding a backend kernel makes torch warn once per process; the override is
            # the whole point, and revert() removes it again.
            warnings.filterwarnings("ignore", message=".*[Oo]verrid.*")
            for spec in overload_specs():
                try:
                    original = _original_for(spec, key)
                    if original is None:
                        continue
                    library.impl(spec.impl_name, make_kernel(spec, original), key, with_keyset=True)
                except Exception as exc:  # one odd overload must not block the rest
                    reg.problems.append(f"{spec.qualified} at {key}: {type(exc).__name__}: {exc}")
                    continue
                reg.specs.append(spec)
        if reg.problems:
            logger.warning(
                "blackwell-compat: %d overload(s) could not be intercepted at %s: %s",
                len(reg.problems),
                key,
                "; ".join(reg.problems[:5]),
            )
        logger.debug("registered %d kernels at %s", len(reg.specs), key)
        return reg

    def destroy(self) -> None:
        try:
            self.library._destroy()
        except Exception as exc:  # pragma: no cover - torch internals
            logger.warning("blackwell-compat: removing the %s kernels failed: %s", self.key, exc)


def _category(dtype: Any) -> int:
    if dtype.is_complex:
        return 3
    if dtype.is_floating_point:
        return 2
    return 0 if str(dtype) == "torch.bool" else 1


_NUMBER_TYPES = frozenset((bool, int, float, complex))

# (type, exact value key, reference dtype, wanted dtype) -> 0-dim tensor.  The value key keeps
# the sign of zero (0.0 == -0.0 would share an entry) and NaNs are never cached, so an entry is
# only ever reused for a bit-identical number.
_NUMBER_CACHE: dict[tuple[Any, ...], Any] = {}
_NUMBER_CACHE_SIZE = 256


def _value_key(value: Any) -> Any:
    """A cache key equal only for bit-identical numbers of the same type, or ``None``."""
    kind = value.__class__
    if kind is float:
        if value != value:
            return None
        return (kind, value, math.copysign(1.0, value))
    if kind is complex:
        re, im = value.real, value.imag
        if re != re or im != im:
            return None
        return (kind, re, im, math.copysign(1.0, re), math.copysign(1.0, im))
    return (kind, value)


def _number_dtype(value: Any, tensors: list[Any]) -> Any:
    """The dtype of the 0-dim tensor that stands for a wrapped number *value*.

    It must promote like PyTorch's wrapped number against *tensors* once every tensor operand
    has at least one dimension (see :func:`_call_with_numbers`), and keep the number's value
    where the kernel reads it at higher precision than the result (``x_f16 * 0.1`` computes
    with the double ``0.1`` rounded to float, not to half).
    """
    import torch

    kind = value.__class__
    if kind is bool:
        wide = torch.bool
    elif kind is int:
        wide = torch.int64
    elif kind is float:
        wide = torch.float64
    else:
        wide = torch.complex128
    if not tensors or _category(wide) <= max(_category(t.dtype) for t in tensors):
        return wide
    # A number of a higher category than every tensor: the result takes that category's
    # default dtype (or, for a complex number with a float tensor, that tensor's complex type).
    dtype = torch.result_type(tensors[0], value)
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, torch.result_type(tensor, value))
    if dtype == torch.complex32:
        # complex32 results compute in complex64 with the number rounded to complex64
        # (what the kernel reads); a complex64 0-dim tensor still yields complex32 against a
        # half tensor: a lower-priority complex operand takes the float operand's precision.
        return torch.complex64
    return dtype


def _as_tensor(value: Any, tensors: list[Any]) -> Any:
    """A number in a ``Tensor`` slot as a 0-dim tensor (see :func:`_number_dtype`).

    Cached by exact value and the operands' dtypes (kernels only read these operands), so a
    loop multiplying by the same constant neither allocates nor works out promotion per call.
    """
    import torch

    value_key = _value_key(value)
    if value_key is not None:
        # The default dtype decides what an int tensor times a float number gives.
        key = (*value_key, torch.get_default_dtype(), *[t.dtype for t in tensors])
        cached = _NUMBER_CACHE.get(key)
        if cached is not None:
            return cached
    tensor = torch.tensor(value, dtype=_number_dtype(value, tensors))
    if value_key is not None and len(_NUMBER_CACHE) < _NUMBER_CACHE_SIZE:
        _NUMBER_CACHE[key] = tensor
    return tensor


def _number_slots(spec: OverloadSpec, args: tuple[Any, ...]) -> list[int]:
    """Positions of ``Tensor`` parameters that hold a Python number (a wrapped number)."""
    count = len(args)
    return [i for i in spec.tensor_slots if i < count and args[i].__class__ in _NUMBER_TYPES]


def _call_with_numbers(
    call: Callable[[Any, tuple[Any, ...], dict[str, Any]], Any],
    spec: OverloadSpec,
    keyset: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    slots: list[int],
) -> Any:
    """Call a kernel that cannot take Python numbers where PyTorch passed wrapped numbers.

    A Python kernel receives PyTorch's "wrapped number" (the ``2.5`` of ``x * 2.5``) as a plain
    number, and a captured kernel only takes tensors.  A wrapped number promotes below every
    tensor, 0-dim tensors included; a plain 0-dim tensor does not.  So the number becomes a
    0-dim tensor (:func:`_as_tensor`), and when every tensor operand is 0-dim as well, those
    operands are given one dimension for the call (views of one element) and the result is
    viewed back as 0-dim: against 1-element tensors a 0-dim number promotes exactly as the
    wrapped number did, and the kernel reads its value at the same precision.
    """
    tensor_type = _tensor_type()
    count = len(args)
    tensors = [args[i] for i in spec.tensor_slots if i < count and isinstance(args[i], tensor_type)]
    fixed = list(args)
    for i in slots:
        fixed[i] = _as_tensor(args[i], tensors)
    for tensor in tensors:
        if tensor.dim() != 0:
            return call(keyset, tuple(fixed), kwargs)
    if not tensors:
        return call(keyset, tuple(fixed), kwargs)

    import torch

    for i in spec.tensor_slots:
        if i < len(args) and isinstance(args[i], tensor_type):
            fixed[i] = args[i].view(1)
    out_name = next((n for n in spec.mutable if n in kwargs), None)
    out = kwargs.get(out_name) if out_name is not None else None
    if out_name is not None and isinstance(out, tensor_type):
        if out.dim() != 0:
            common = torch.result_type(tensors[0], args[slots[0]])
            if not torch.can_cast(common, out.dtype):
                # Let the kernel raise its own "can't be cast" error, out untouched.
                return call(keyset, tuple(fixed), kwargs)
            # What the kernel does to an out= tensor of another shape, warning included.
            from .rewrites import resize_output

            resize_output(out, ())
        kwargs = {**kwargs, out_name: out.view(1)}
    result = call(keyset, tuple(fixed), kwargs)
    if spec.returns_alias:
        return out if out is not None else args[0]
    if isinstance(result, tensor_type):
        return result.view(())
    return result


def _original_for(spec: OverloadSpec, key: str) -> Original | None:
    import torch

    if key == "BackendSelect":
        after = torch._C._dispatch_keyset_full_after(torch._C.DispatchKey.BackendSelect)
        op = spec.op
        if spec.factory:
            return _factory_original(op)
        redispatch_op = op.redispatch

        def plain_redispatch(keyset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return redispatch_op(keyset & after, *args, **kwargs)

        def redispatch(keyset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            slots = _number_slots(spec, args)
            if slots:
                return _call_with_numbers(plain_redispatch, spec, keyset, args, kwargs, slots)
            return redispatch_op(keyset & after, *args, **kwargs)

        return redispatch
    kernel = torch.library.get_kernel(spec.qualified, key)
    call_boxed = kernel.call_boxed

    def plain_boxed(keyset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return call_boxed(keyset, *args, **kwargs)

    tensor_slots = spec.tensor_slots
    number_types = _NUMBER_TYPES

    def boxed(keyset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        count = len(args)
        for i in tensor_slots:
            if i < count and args[i].__class__ in number_types:
                return _call_with_numbers(
                    plain_boxed, spec, keyset, args, kwargs, _number_slots(spec, args)
                )
        return call_boxed(keyset, *args, **kwargs)

    return boxed


def _factory_original(op: Any) -> Original:
    """What the generated ``BackendSelect`` kernel of a factory op does: pick the backend."""
    import torch

    keys = {
        "cpu": torch._C.DispatchKey.CPU,
        "cuda": torch._C.DispatchKey.CUDA,
    }

    def redispatch(keyset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        device = kwargs.get("device")
        kind = torch.device(device).type if device is not None else "cpu"
        key = keys.get(kind)
        if key is None:  # another backend: let the dispatcher choose from scratch
            with bypass():
                return op(*args, **kwargs)
        return op.redispatch(torch._C.DispatchKeySet(key), *args, **kwargs)

    return redispatch


def _reset_for_tests() -> None:
    """Drop every registration and state (tests only)."""
    global _guard_enabled, _recorder, _strategy_override
    with _lock:
        _guard_enabled = False
        _recorder = None
        _strategy_override = None
        _uninstall_all()
