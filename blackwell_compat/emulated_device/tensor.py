"""The tensors of the emulated CUDA device: CPU memory behind a tensor that says ``cuda:0``.

An :class:`EmulatedTensor` is a wrapper subclass whose C++ device is the CPU, so autograd, the
dispatcher and the allocator never reach the CUDA runtime (which, without a driver, aborts the
process from C++), while Python sees ``device == cuda:0`` and ``is_cuda``.  Every aten op on one
reaches ``__torch_dispatch__``: the CPU tensors inside run the op with the thread marked "on the
device" (so the emulation's Jiterator failure and the op guard apply to them, never to plain CPU
tensors) and the results come back wrapped.  What CUDA refuses is refused the same way: mixing
with a CPU tensor that is not a 0-dim scalar, ``numpy()``, pinning a device tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .. import state
from ..errors import BlackwellCompatError

__all__ = [
    "CPU",
    "CUDA0",
    "EmulatedDeviceError",
    "EmulatedTensor",
    "as_device",
    "check_index",
    "from_cpu",
    "to_cpu",
    "wrap",
]

CPU = torch.device("cpu")
CUDA0 = torch.device("cuda", 0)


class EmulatedDeviceError(BlackwellCompatError, RuntimeError):
    """A CUDA API or tensor use the emulated device does not offer (the message names the form
    that works)."""


def refuse(api: str, instead: str) -> EmulatedDeviceError:
    return EmulatedDeviceError(
        f"{api} is not available on the emulated CUDA device (blackwell-compat "
        f"emulate(device='cuda'): CPU memory behind a cuda:0 tensor). {instead}"
    )


def as_device(value: Any) -> torch.device:
    """*value* (``torch.device``, ``"cuda:0"``, ``0``) as a ``torch.device``; an int is a CUDA
    index, as in PyTorch."""
    if isinstance(value, torch.device):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return torch.device("cuda", value)
    return torch.device(value)


def check_index(device: torch.device) -> None:
    """Refuse a CUDA index the emulated device does not have, as CUDA does."""
    if device.index not in (None, 0):
        raise RuntimeError(
            f"CUDA error: invalid device ordinal (cuda:{device.index}; the emulated CUDA "
            "device of blackwell-compat has one GPU, cuda:0)"
        )


# Ops CUDA runs with a CPU tensor next to a device tensor (copies, index tensors).
_CROSS_DEVICE_NAMES = frozenset(
    {
        "copy_",
        "_copy_from",
        "_copy_from_and_resize",
        "_to_copy",
        "index",
        "index_put",
        "index_put_",
        "_index_put_impl_",
        "set_",
        "lift_fresh",
        "detach",
        "alias",
        # packed sequences keep their lengths and batch sizes on the CPU, on CUDA too
        "_pack_padded_sequence",
        "_pad_packed_sequence",
        "lstm",
        "gru",
        "rnn_tanh",
        "rnn_relu",
    }
)


#: Outputs CUDA keeps on the CPU (by position): a packed sequence's batch sizes and lengths.
_HOST_OUTPUTS = {"_pack_padded_sequence": frozenset({1}), "_pad_packed_sequence": frozenset({1})}


class EmulatedTensor(torch.Tensor):
    """A tensor of the emulated CUDA device: ``_elem`` holds its data on the CPU."""

    _elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor, requires_grad: bool = False) -> EmulatedTensor:
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.size(),
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            layout=elem.layout,
            device=CPU,
            requires_grad=requires_grad,
        )
        wrapper._elem = elem
        return wrapper

    # Python sees the device; C++ sees the CPU (the CUDA runtime is never reached).
    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return CUDA0

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True

    @property
    def is_cpu(self) -> bool:  # type: ignore[override]
        return False

    def get_device(self) -> int:
        return 0

    @property
    def data(self) -> torch.Tensor:
        return self.detach()

    @data.setter
    def data(self, value: torch.Tensor) -> None:
        if not isinstance(value, EmulatedTensor):
            # `t.data = cpu_tensor` (``nn.Module.cpu()``): this object becomes a CPU tensor.
            if value.device.type != "cpu":
                raise refuse(f"Assigning a {value.device} tensor to `.data`", "Use 'cpu'.")
            replacement: torch.Tensor
            if getattr(self, "_is_param", False):
                replacement = torch.nn.Parameter(value.detach(), self.requires_grad)
            else:
                replacement = value.detach().requires_grad_(self.requires_grad)
            grad = self.grad
            self.grad = None
            try:
                torch.utils.swap_tensors(self, replacement)  # type: ignore[no-untyped-call]
            except RuntimeError as exc:
                self.grad = grad
                raise refuse(
                    "Assigning a CPU tensor to `.data` of a cuda tensor held elsewhere",
                    "Make a new tensor: `t = value` (or `t.to('cpu')`).",
                ) from exc
            if grad is not None:  # the gradient goes along (nn.Module._apply then sets its data)
                self.grad = to_cpu(grad)
            return
        torch._C.TensorBase.data.__set__(self, value)  # type: ignore[attr-defined]
        self._elem = value._elem

    def __tensor_flatten__(self) -> tuple[list[str], None]:
        return ["_elem"], None

    @staticmethod
    def __tensor_unflatten__(
        inner: dict[str, torch.Tensor], meta: Any, outer_size: Any, outer_stride: Any
    ) -> EmulatedTensor:
        return EmulatedTensor(inner["_elem"])

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        text = repr(self._elem.detach())
        grad = f", grad_fn=<{type(self.grad_fn).__name__}>" if self.grad_fn is not None else ""
        if self.requires_grad and self.grad_fn is None:
            grad = ", requires_grad=True"
        inner = text[len("tensor(") : -1] if text.startswith("tensor(") else text
        return f"tensor({inner}, device='cuda:0'{grad})"

    def __reduce_ex__(self, protocol: Any) -> Any:
        # torch.save writes the data as a CPU tensor (a file any machine can read).
        return to_cpu(self).detach().__reduce_ex__(protocol)  # type: ignore[no-untyped-call]

    # -- what CUDA refuses, refused the same way ----------------------------------------------

    def numpy(self, *, force: bool = False) -> Any:
        if force:
            return to_cpu(self).detach().numpy()
        raise TypeError(
            "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the "
            "tensor to host memory first."
        )

    def tolist(self) -> Any:
        return self._elem.tolist()

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        return self.numpy()

    def pin_memory(self, device: Any = None) -> torch.Tensor:
        raise RuntimeError(f"cannot pin '{self.type()}' only dense CPU tensors can be pinned")

    def is_pinned(self, device: Any = None) -> bool:
        return False

    def type(self, dtype: Any = None, non_blocking: bool = False, **kwargs: Any) -> Any:
        if dtype is None:
            return "torch.cuda." + torch._C.TensorBase.type(self._elem).split(".")[-1]
        if isinstance(dtype, torch.dtype):
            return move(self, (dtype,), {})
        name = dtype if isinstance(dtype, str) else f"{dtype.__module__}.{dtype.__name__}"
        if name.startswith("torch.cuda."):
            host_name = "torch." + name.removeprefix("torch.cuda.")
            target = torch._C.TensorBase.type(torch.empty(0), host_name).dtype
            return move(self, (target,), {})
        return torch._C.TensorBase.type(to_cpu(self), name)

    def data_ptr(self) -> int:
        # The CPU address: aliasing checks (nn.LSTM.flatten_parameters) compare these; no CUDA
        # API that would take it as a device address is offered.
        return self._elem.data_ptr()

    def untyped_storage(self) -> Any:
        raise refuse("Tensor.untyped_storage()", "Use `t.cpu().untyped_storage()`.")

    def storage(self) -> Any:
        raise refuse("Tensor.storage()", "Use `t.cpu().storage()`.")

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        raise refuse("DLPack export (__dlpack__)", "Export `t.cpu()` instead.")

    def share_memory_(self) -> Any:
        raise refuse("Tensor.share_memory_()", "Share `t.cpu()` between processes.")

    def record_stream(self, stream: Any) -> None:
        return None  # one emulated stream order: nothing to record

    # -- moving -------------------------------------------------------------------------------

    def cpu(self, memory_format: Any = torch.preserve_format) -> torch.Tensor:
        return to_cpu(self)

    def cuda(self, device: Any = None, non_blocking: bool = False, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        if device is not None:
            check_index(as_device(device))
        return self

    def to(self, *args: Any, **kwargs: Any) -> Any:
        return move(self, args, kwargs)

    @classmethod
    def __torch_dispatch__(  # type: ignore[override]
        cls, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        return _dispatch(func, args, kwargs or {})


def _unwrap(value: Any, plain: list[torch.Tensor]) -> Any:
    if isinstance(value, EmulatedTensor):
        elem = value._elem
        if elem.is_conj() or elem.is_neg():
            # A lazily conjugated (or negated) view: inside the device's dispatch torch's
            # conjugate fallback does not run, so kernels would read the unconjugated memory
            # (a silently wrong result): compute with the resolved values.
            return elem.resolve_conj().resolve_neg()
        return elem
    if isinstance(value, torch.Tensor):
        if value.dim() > 0:
            plain.append(value)
        return value
    cls = value.__class__
    if cls is list or cls is tuple:
        return cls(_unwrap(v, plain) for v in value)
    return value


def _lazy_view_written(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether *func* writes to a device tensor that is a lazily conjugated/negated view."""
    schema = func._schema
    if not schema.is_mutable:
        return False
    for index, argument in enumerate(schema.arguments):
        info = argument.alias_info
        if info is None or not info.is_write:
            continue
        value = args[index] if index < len(args) else kwargs.get(argument.name)
        elem = getattr(value, "_elem", None) if isinstance(value, EmulatedTensor) else None
        if elem is not None and (elem.is_conj() or elem.is_neg()):
            return True
    return False


def _dispatch(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _lazy_view_written(func, args, kwargs):
        raise refuse(
            f"{func} writing into a conjugate or negative view (x.conj(), x.imag of a conj) of "
            "a device tensor",
            "resolve it first (`x = x.conj().resolve_conj()`), or write into the tensor itself",
        )
    plain: list[torch.Tensor] = []
    uargs = tuple(_unwrap(a, plain) for a in args)
    ukwargs = {k: _unwrap(v, plain) for k, v in kwargs.items()} if kwargs else {}
    if plain and func._opname not in _CROSS_DEVICE_NAMES:
        raise RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices, "
            f"cuda:0 and cpu! ({func}; a CPU tensor that is not a 0-dim scalar cannot meet a "
            "cuda tensor, as on a real GPU: move it with `.to('cuda')`)"
        )
    if "device" in ukwargs and ukwargs["device"] is not None:
        # A CPU device here is the wrapper's own C++ device (autograd's ToCopyBackward, a
        # factory C++ derives from a device tensor): the result stays on the device.  Moving
        # to the host happens above the dispatcher (`.cpu()`, `.to("cpu")`).
        target = as_device(ukwargs["device"])
        if target.type == "cuda":
            check_index(target)
        ukwargs["device"] = CPU
    if ukwargs.get("pin_memory"):
        ukwargs["pin_memory"] = False
    local = state.local
    local.on_device += 1
    try:
        out = func(*uargs, **ukwargs)
    finally:
        local.on_device -= 1
    host = _HOST_OUTPUTS.get(func._opname)
    if host is not None and isinstance(out, tuple):
        return tuple(
            o if i in host else _rewrap(o, args, uargs, kwargs, ukwargs) for i, o in enumerate(out)
        )
    return _rewrap(out, args, uargs, kwargs, ukwargs)


def _rewrap(
    out: Any, args: tuple[Any, ...], uargs: tuple[Any, ...], kwargs: Any, ukwargs: Any
) -> Any:
    if isinstance(out, torch.Tensor):
        for original, unwrapped in zip(args, uargs, strict=True):
            if out is unwrapped:
                return original
        for key, unwrapped in ukwargs.items():
            if out is unwrapped and key in kwargs:
                return kwargs[key]
        for original, unwrapped in zip(args, uargs, strict=True):
            if isinstance(unwrapped, (list, tuple)) and isinstance(original, (list, tuple)):
                for o, u in zip(original, unwrapped, strict=False):
                    if out is u:
                        return o
        return wrap(out)
    if isinstance(out, (list, tuple)):
        return type(out)(_rewrap(o, args, uargs, kwargs, ukwargs) for o in out)
    return out


def wrap(elem: torch.Tensor) -> torch.Tensor:
    """*elem* (a CPU tensor, not copied) as a tensor of the emulated device."""
    if isinstance(elem, EmulatedTensor):
        return elem
    wrapper = EmulatedTensor(elem)
    emulated = state.emulated_cuda
    if emulated is not None:
        emulated.memory.track(elem)
    return wrapper


class _ToDevice(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        return wrap(tensor.detach().clone())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return to_cpu(grad) if isinstance(grad, EmulatedTensor) else grad


class _ToHost(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        return tensor._elem.detach().clone()  # type: ignore[attr-defined, no-any-return]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return from_cpu(grad)


def from_cpu(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of the CPU tensor *tensor* on the emulated device (differentiable)."""
    if isinstance(tensor, EmulatedTensor):
        return tensor
    if tensor.requires_grad and torch.is_grad_enabled():
        return _ToDevice.apply(tensor)  # type: ignore[no-any-return, no-untyped-call]
    return wrap(tensor.detach().clone())


def to_cpu(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy of the device tensor *tensor* (differentiable)."""
    if not isinstance(tensor, EmulatedTensor):
        return tensor
    if tensor.requires_grad and torch.is_grad_enabled():
        return _ToHost.apply(tensor)  # type: ignore[no-any-return, no-untyped-call]
    return tensor._elem.detach().clone()


def _parse_to(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, bool, Any]:
    kwargs = dict(kwargs)
    copy = bool(kwargs.pop("copy", False))
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        args = (torch.device("cuda", args[0]), *args[1:])
    if isinstance(kwargs.get("device"), int):
        kwargs["device"] = torch.device("cuda", kwargs["device"])
    device, dtype, _non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
    return device, dtype, copy, memory_format


def move(
    tensor: torch.Tensor,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    original: Callable[..., Any] | None = None,
) -> Any:
    """``tensor.to(*args, **kwargs)`` where the emulated device may be the source or target.

    A target on another device than CPU or CUDA is refused (the emulated device has no route
    there); *original* is ``Tensor.to`` for the CPU-to-CPU case.
    """
    if args and isinstance(args[0], EmulatedTensor):  # t.to(other): other's device and dtype
        other = args[0]
        args = (CUDA0, other.dtype, *args[1:])
    device, dtype, copy, memory_format = _parse_to(args, kwargs)
    on_device = isinstance(tensor, EmulatedTensor)
    keep = (None, torch.preserve_format)
    fmt = {} if memory_format in keep else {"memory_format": memory_format}
    if device is None:
        target_cuda = on_device
    elif device.type == "cuda":
        check_index(device)
        target_cuda = True
    elif device.type == "cpu":
        target_cuda = False
    else:
        raise refuse(
            f"Tensor.to({device})",
            "The emulated device moves tensors between 'cpu' and 'cuda' only.",
        )
    if target_cuda and not on_device:
        converted = tensor
        if dtype is not None or fmt:
            converted = torch.Tensor.to(tensor, dtype=dtype or tensor.dtype, **fmt)
        return from_cpu(converted)
    if not target_cuda and on_device:
        host = to_cpu(tensor)
        if dtype is not None or fmt:
            host = host.to(dtype=dtype or host.dtype, **fmt)
        return host
    if not on_device:
        assert original is not None
        return original(tensor, *args, **kwargs)
    # device to device: a dtype or layout change, or a copy, through the dispatcher.
    if dtype is None and not fmt and not copy:
        return tensor
    if not copy and (dtype is None or dtype == tensor.dtype) and not fmt:
        return tensor
    return torch.ops.aten._to_copy.default(tensor, dtype=dtype or tensor.dtype, **fmt)
