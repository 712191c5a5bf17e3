"""The entry points onto the emulated device that PyTorch's C++ would take to the CUDA runtime.

Factories with ``device="cuda"`` (and ``0``, ``"cuda:0"``, ``torch.device``) call CUDA's lazy
initialisation in C++ before any dispatch mode runs, and some paths abort the process from
there; the :class:`DeviceMode` (a ``TorchFunctionMode``) sees every such call first and makes the
tensor on the CPU, then wraps it.  ``Tensor.to``/``.cuda``/``.pin_memory``/``.is_pinned`` and
``torch.load`` are replaced at the class or module level instead (process-wide: the DataLoader's
pinning thread and ``nn.Module.to`` in any thread take them).  Under ``torch.autocast("cuda")``
calls on device tensors run under CPU autocast with the CUDA autocast dtype.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _device as _device_utils

from .. import state
from .tensor import (
    CPU,
    CUDA0,
    EmulatedTensor,
    as_device,
    check_index,
    from_cpu,
    move,
    refuse,
    to_cpu,
    wrap,
)

__all__ = [
    "DeviceMode",
    "EmulatedGenerator",
    "PinnedSet",
    "emulated_load",
    "refresh",
    "tensor_methods",
]


def _on_device(args: tuple[Any, ...]) -> bool:
    for arg in args:
        if isinstance(arg, EmulatedTensor):
            return True
        if isinstance(arg, (list, tuple)) and any(isinstance(a, EmulatedTensor) for a in arg):
            return True
    return False


def _lift_cpu_scalar(arg: Any) -> Any:
    """A 0-dim CPU tensor that needs a gradient, meeting device tensors, moved to the device
    through a differentiable copy.  CUDA lets a CPU scalar meet a device tensor; its gradient
    then comes back as a device scalar, which the autograd engine moves to the CPU.  The
    engine sees the wrapper's C++ device (the CPU) and cannot: the explicit copy does it."""
    if (
        isinstance(arg, torch.Tensor)
        and arg.requires_grad
        and arg.dim() == 0
        and not isinstance(arg, EmulatedTensor)
    ):
        return from_cpu(arg)
    return arg


def _wrap_result(result: Any) -> Any:
    if isinstance(result, EmulatedTensor) or not isinstance(result, torch.Tensor):
        return result
    if result.requires_grad and result.is_leaf:
        wrapper = EmulatedTensor(result.detach(), requires_grad=True)
        if state.emulated_cuda is not None:
            state.emulated_cuda.memory.track(wrapper._elem)
        return wrapper
    return wrap(result)


_PARSE_TO = torch._C._nn._parse_to
#: The functions torch.set_default_device gives a device (torch's own list).
_CONSTRUCTORS = _device_utils._device_constructors()


def _default_device_is_cuda() -> bool:
    # Read without torch.get_default_device(), which makes a tensor to answer.
    context = getattr(getattr(torch, "_GLOBAL_DEVICE_CONTEXT", None), "device_context", None)
    device = getattr(context, "device", None)
    return isinstance(device, torch.device) and device.type == "cuda"


def refresh(tensor: EmulatedTensor) -> None:
    """Give a device tensor the sizes and strides its CPU tensor has now.

    An op that changes them in place (an ``out=`` tensor resized, ``resize_``, ``unsqueeze_``)
    changes the CPU tensor inside ``__torch_dispatch__``, where the wrapper's own metadata
    cannot be changed; here, above the dispatcher, the wrapper is swapped for an up-to-date one
    (same Python object, same data).
    """
    elem = tensor._elem
    if (
        tensor.shape == elem.shape
        and tensor.stride() == elem.stride()
        and tensor.storage_offset() == elem.storage_offset()
    ):
        return
    fresh = EmulatedTensor(elem, requires_grad=tensor.requires_grad and tensor.is_leaf)
    torch.utils.swap_tensors(tensor, fresh)  # type: ignore[no-untyped-call]


def _true_metadata(result: EmulatedTensor, func: Any) -> torch.Tensor:
    """*result* with the sizes and strides of its CPU tensor.

    A C++ composite that changes an intermediate tensor's metadata in place (``stft`` ends with
    ``squeeze_``/``transpose_``) changes the CPU tensor inside ``__torch_dispatch__``, where the
    wrapper's own metadata cannot follow.  A result without autograd history is rewrapped; one
    with history cannot be, and is refused rather than returned with a wrong shape.
    """
    elem = result._elem
    if (
        result.shape == elem.shape
        and result.stride() == elem.stride()
        and result.storage_offset() == elem.storage_offset()
    ):
        return result
    if result.grad_fn is None:
        return wrap(elem) if not result.requires_grad else EmulatedTensor(elem, True)
    name = getattr(func, "__name__", str(func))
    raise refuse(
        f"Differentiating through {name} (a composite op that reshapes a tensor in place)",
        "Run it under torch.no_grad(), or on CPU tensors.",
    )


def _in_place(func: Any) -> bool:
    name = getattr(func, "__name__", "")
    return name.endswith("_") and not name.endswith("__")


def _refresh_all(out: Any) -> None:
    if isinstance(out, EmulatedTensor):
        refresh(out)
    elif isinstance(out, (list, tuple)):
        for item in out:
            if isinstance(item, EmulatedTensor):
                refresh(item)


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_as(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # C++ takes the other tensor's options, whose device is the wrapper's C++ device (CPU).
    if len(args) != 2 or kwargs:
        return NotImplemented
    tensor, other = args
    on_device, other_on_device = (
        isinstance(tensor, EmulatedTensor),
        isinstance(other, EmulatedTensor),
    )
    if on_device == other_on_device:
        return NotImplemented
    return move(tensor, (CUDA0 if other_on_device else CPU, other.dtype), {})


def _new_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Tensor.new_tensor is no ATen op: C++ makes it on the wrapper's C++ device (the CPU).
    if not args or not isinstance(args[0], EmulatedTensor) or "device" in kwargs:
        return NotImplemented
    made = torch._C.TensorBase.new_tensor(args[0]._elem, *args[1:], **kwargs)
    return _wrap_result(made)


def _type(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # t.type("torch.cuda.FloatTensor") / t.type(torch.cuda.FloatTensor) on a CPU tensor.
    if len(args) < 2 or isinstance(args[0], EmulatedTensor):
        return NotImplemented
    name = args[1] if isinstance(args[1], str) else getattr(args[1], "__module__", "") + "."
    name += "" if isinstance(args[1], str) else getattr(args[1], "__name__", "")
    if not name.startswith("torch.cuda."):
        return NotImplemented
    host = torch._C.TensorBase.type(args[0], "torch." + name.removeprefix("torch.cuda."))
    return from_cpu(host)


def _cpu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not args or not isinstance(args[0], EmulatedTensor):
        return NotImplemented
    return to_cpu(args[0])


def _onto_device(result: Any, host: frozenset[int] | None) -> Any:
    """A call on device tensors whose result C++ made on the wrapper's C++ device (the CPU):
    composite ops create tensors from an input's options (``_pad_packed_sequence``).  On CUDA
    they are device tensors, so they are moved there (no copy unless autograd needs one);
    *host* positions stay on the CPU, as CUDA keeps them."""
    if isinstance(result, EmulatedTensor):
        return result
    if isinstance(result, torch.Tensor):
        if result.requires_grad:
            return from_cpu(result)
        return wrap(result)
    if isinstance(result, tuple) and any(
        isinstance(r, torch.Tensor) and not isinstance(r, EmulatedTensor) for r in result
    ):
        items = [r if host and i in host else _onto_device(r, None) for i, r in enumerate(result)]
        return type(result)(*items) if hasattr(result, "_fields") else type(result)(items)
    return result


#: Calls whose tensor results belong to the CPU even with device tensors among the arguments.
_HOST_RESULTS = frozenset(
    {
        torch.autograd.grad,
        torch.autograd.backward,
        torch.Tensor.backward,
        torch.Tensor.numpy,
        torch.Tensor.tolist,
        torch.Tensor.item,
        torch.Tensor.__dlpack__,
    }
)
#: Result positions CUDA keeps on the CPU: a packed sequence's batch sizes and lengths.
_HOST_POSITIONS = {
    "_pack_padded_sequence": frozenset({1}),
    "_pad_packed_sequence": frozenset({1}),
}


_SPECIAL = {
    torch.Tensor.cpu: _cpu,
    torch.Tensor.type_as: _type_as,
    torch.Tensor.new_tensor: _new_tensor,
    torch.Tensor.type: _type,
}


class DeviceMode(TorchFunctionMode):
    """Makes ``device="cuda"`` factories on the CPU and wraps what they return."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        special = _SPECIAL.get(func)
        if special is not None:
            answer = special(args, kwargs or {})
            if answer is not NotImplemented:
                return answer
        if func is _PARSE_TO and args and _is_index(args[0]):
            # nn.Module.to(0): torch 2.6 resolves a bare index through the accelerator in C++.
            args = (torch.device("cuda", args[0]), *args[1:])
        device = kwargs.get("device") if kwargs else None
        if device is None and func in _CONSTRUCTORS and _default_device_is_cuda():
            device = CUDA0  # torch.set_default_device("cuda"): its mode sits below this one
            kwargs = dict(kwargs or {}, device=device)
        if device is not None and kwargs:
            if _is_index(device):
                device = kwargs["device"] = torch.device("cuda", device)
            if device is not None:
                target = as_device(device)
                if target.type == "cuda":
                    check_index(target)
                    kwargs = dict(kwargs)
                    if _on_device(args):
                        del kwargs["device"]  # computed on the device already
                        return func(*args, **kwargs)
                    kwargs["device"] = CPU
                    if kwargs.get("pin_memory"):
                        kwargs["pin_memory"] = False
                    # The factory computes on the device (kaiser_window is a Jiterator op).
                    local = state.local
                    local.on_device += 1
                    try:
                        made = func(*args, **kwargs)
                    finally:
                        local.on_device -= 1
                    return _wrap_result(made)
        on_device = _on_device(args)
        if not on_device:
            return func(*args, **(kwargs or {}))
        args = tuple(map(_lift_cpu_scalar, args))
        if torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")
            with torch.autocast("cpu", dtype=dtype):
                result = func(*args, **(kwargs or {}))
        else:
            result = func(*args, **(kwargs or {}))
        if kwargs and "out" in kwargs:
            _refresh_all(kwargs["out"])
        elif args and isinstance(args[0], EmulatedTensor) and _in_place(func):
            refresh(args[0])
        if isinstance(result, EmulatedTensor):
            return _true_metadata(result, func)
        if isinstance(result, (list, tuple)) and not hasattr(result, "_fields"):
            result = type(result)(
                _true_metadata(r, func) if isinstance(r, EmulatedTensor) else r for r in result
            )
        if func in _HOST_RESULTS:
            return result
        return _onto_device(result, _HOST_POSITIONS.get(getattr(func, "__name__", "")))


class _GeneratorMeta(type(torch._C.Generator)):  # type: ignore[misc]
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, torch._C.Generator)


class EmulatedGenerator(torch._C.Generator, metaclass=_GeneratorMeta):
    """``torch.Generator`` while the device is installed: ``Generator("cuda")`` is a CPU
    generator that reports ``cuda:0``; every other device is PyTorch's own."""

    def __new__(cls, device: Any = "cpu") -> Any:
        target = as_device(device)
        if target.type != "cuda":
            return torch._C.Generator(device)
        check_index(target)
        return super().__new__(cls, "cpu")  # type: ignore[call-arg]

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", 0)


def _cuda_like(value: Any) -> bool:
    if isinstance(value, str):
        return value.startswith("cuda")
    if isinstance(value, torch.device):
        return value.type == "cuda"
    if isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, EmulatedTensor)


class PinnedSet:
    """The CPU tensors ``pin_memory()`` returned, by identity (tensors compare elementwise)."""

    def __init__(self) -> None:
        self._ids: set[int] = set()

    def add(self, tensor: Any) -> None:
        self._ids.add(id(tensor))
        weakref.finalize(tensor, self._ids.discard, id(tensor))

    def __contains__(self, tensor: Any) -> bool:
        return id(tensor) in self._ids


def tensor_methods(pinned: PinnedSet) -> dict[str, Callable[..., Any]]:
    """Replacements for ``torch.Tensor`` methods that reach CUDA for a CPU tensor."""
    original_to = torch._C.TensorBase.to
    original_pin = torch._C.TensorBase.pin_memory

    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if (
            isinstance(self, EmulatedTensor)
            or any(_cuda_like(a) for a in args)
            or _cuda_like(kwargs.get("device"))
        ):
            return move(self, args, kwargs, original_to)
        return original_to(self, *args, **kwargs)

    def cuda(
        self: torch.Tensor, device: Any = None, non_blocking: bool = False, **kwargs: Any
    ) -> Any:
        if device is not None:
            check_index(as_device(device))
        memory_format = kwargs.get("memory_format", torch.preserve_format)
        source = (
            self
            if memory_format is torch.preserve_format
            else original_to(self, memory_format=memory_format)
        )
        return from_cpu(source)

    def pin_memory(self: torch.Tensor, device: Any = None) -> torch.Tensor:
        if self in pinned:
            return self
        if self.layout != torch.strided:
            return original_pin(self)  # PyTorch's own refusal
        copy = self.clone()
        pinned.add(copy)
        return copy

    def is_pinned(self: torch.Tensor, device: Any = None) -> bool:
        return self in pinned

    return {"to": to, "cuda": cuda, "pin_memory": pin_memory, "is_pinned": is_pinned}


def _walk(value: Any, convert: Callable[[torch.Tensor], Any]) -> Any:
    if isinstance(value, torch.Tensor):
        return convert(value)
    if isinstance(value, torch.nn.Module):
        return value._apply(convert)  # type: ignore[no-untyped-call]
    if isinstance(value, list):
        return type(value)(_walk(v, convert) for v in value)
    if isinstance(value, tuple):
        items = [_walk(v, convert) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        rebuilt = value.copy()
        for key, item in value.items():
            rebuilt[key] = _walk(item, convert)
        return rebuilt
    return value


def emulated_load(original: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.load`` that puts tensors headed for CUDA (``map_location`` or the file's own
    location) on the emulated device: storages load on the CPU, then their tensors are wrapped
    (sharing kept).  A ``map_location`` callable is called as usual."""

    def load(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
        headed: set[int] = set()

        def locate(storage: Any, location: str) -> Any:
            if callable(map_location):
                result = map_location(storage, location)
                if result is not None:
                    return result
                target: Any = location
            elif isinstance(map_location, dict):
                target = map_location.get(location, location)
            elif map_location is None:
                target = location
            else:
                target = map_location
            device = as_device(target)
            if device.type == "cuda":
                check_index(device)
                headed.add(storage.data_ptr())
                return storage
            if device.type == "cpu":
                return storage
            return storage.to(device)

        result = original(f, locate, *args, **kwargs)
        if not headed:
            return result

        def convert(tensor: torch.Tensor) -> Any:
            if isinstance(tensor, EmulatedTensor):
                return tensor
            if tensor.untyped_storage().data_ptr() in headed:
                if isinstance(tensor, torch.nn.Parameter):
                    return torch.nn.Parameter(wrap(tensor.detach()), tensor.requires_grad)
                return _wrap_result(tensor)
            return tensor

        return _walk(result, convert)

    load.__wrapped__ = original  # type: ignore[attr-defined]
    return load
