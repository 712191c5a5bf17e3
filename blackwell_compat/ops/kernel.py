"""The Python kernel registered for every intercepted overload: decide, then rewrite or raise.

Call by call it chooses between three outcomes:

* the op guard is on and the call is on a targeted device -> a Jiterator-free rewrite
  (:mod:`.rewrites`);
* emulation is on, the guard is not, and the call is on a CPU tensor -> the ``RuntimeError`` an
  affected GPU raises (or, for ``audit``, a record and the correct result); with the emulated
  CUDA device installed only CPU work done for its tensors counts (``state.local.on_device``);
* anything else (another dtype, another device, an empty tensor) -> the original kernel.

The ops layer never imports the emulation: the emulation registers the error it raises with
:func:`set_emulated_failure` when it is imported, and the kernel reads whether it is active
from :mod:`blackwell_compat.state`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .. import devices, state
from ..errors import NVRTC_ARCH_ERROR_LINE
from . import rewrites
from .originals import Original
from .spec import MODE_EMULATE, MODE_GUARD, JitCall, OverloadSpec, make_call

_emulated_failure: Callable[[JitCall], BaseException] | None = None


def set_emulated_failure(factory: Callable[[JitCall], BaseException]) -> None:
    """The emulation's error for a Jiterator call on an emulated device (set on its import)."""
    global _emulated_failure
    _emulated_failure = factory


def _failure(call: JitCall) -> BaseException:
    factory = _emulated_failure
    if factory is not None:
        return factory(call)
    # Only reachable if the state was switched on without the emulation module (a bug).
    return RuntimeError(f"{NVRTC_ARCH_ERROR_LINE}\n\n[blackwell-compat emulation] {call.op}")


def _call_device(spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The device the call runs on: the first non-CPU tensor argument, else CPU."""
    import torch  # torch is imported lazily throughout the package (import cost)

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


def decide(
    spec: OverloadSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str | None, Any, Any]:
    """``(outcome, dtype, device)``; outcome ``None`` means: call the original kernel."""
    if state.local.bypass:
        return None, None, None
    device = _call_device(spec, args, kwargs)
    if device is None:
        return None, None, None
    kind = device.type
    if kind == "cuda":
        if not state.guard_enabled or not devices.device_targeted(device):
            return None, None, None
        outcome = MODE_GUARD
    elif kind == "cpu":
        if not state.emulation_active():
            return None, None, None
        if state.device_mode and not state.local.on_device:
            # The emulated CUDA device plays the GPU: plain CPU tensors never fail.
            return None, None, None
        outcome = MODE_GUARD if state.guard_enabled else MODE_EMULATE
    else:
        return None, None, None
    dtype = spec.jit_dtype(args, kwargs)
    if dtype is None or _has_empty_input(args):
        return None, None, None
    return outcome, dtype, device


def _shown(device: Any) -> Any:
    """The device a record names: ``cuda:0`` for work on the emulated CUDA device."""
    if state.local.on_device and device.type == "cpu":
        return "cuda:0"
    return device


def make_kernel(spec: OverloadSpec, original: Original) -> Callable[..., Any]:
    """The Python kernel registered for *spec*; *original* runs the captured kernel.

    Most calls reach a kernel for a dtype the Jiterator never compiles (a float32 ``mul``), and
    must cost as little as possible: for overloads whose jitted dtypes are all complex, a call
    without a complex operand (tensor, Python number or ``dtype=`` argument) goes straight to
    the original kernel, before any device or state is looked at.
    """

    def call_original(keyset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with state.bypass():
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
        outcome, dtype, device = decide(spec, args, kwargs)
        if outcome is None:
            return original(keyset, args, kwargs)
        recorder = state.recorder
        if outcome == MODE_GUARD:
            if recorder is not None:
                recorder(make_call(spec, args, kwargs, dtype, _shown(device), MODE_GUARD))
            return rewrites.run(spec, keyset, args, kwargs, device, call_original)
        call = make_call(spec, args, kwargs, dtype, _shown(device), MODE_EMULATE)
        if recorder is not None:
            recorder(call)
            return call_original(keyset, args, kwargs)
        raise _failure(call)

    kernel.__name__ = f"blackwell_compat_{spec.packet}_{spec.overload}"
    kernel.__qualname__ = kernel.__name__
    return kernel


@functools.lru_cache(maxsize=1)
def _complex_dtypes() -> frozenset[Any]:
    import torch

    return frozenset((torch.complex32, torch.complex64, torch.complex128))
