"""Emulation of user Jiterator kernels (``torch.cuda.jiterator._create_jit_fn``).

A kernel a program writes itself in C++ and hands to ``torch.cuda.jiterator._create_jit_fn``
(or ``_create_multi_output_jit_fn``) is compiled with the same NVRTC as torch's own Jiterator
ops, so it fails the same way on an affected GPU.  No rung but the NVRTC remedy can serve it:
the op guard has no rewrite of user C++ code, and the fuser rung does not touch it.

Every such kernel is a ``torch.cuda.jiterator._JittedFunction``; its ``__call__`` refuses CPU
tensors (on a CPU-only torch it asserts that CUDA is available, in 2.6 to 2.15).  While
emulation is armed the class's ``__call__`` is wrapped: a call whose tensors are all on the CPU
(the CPU playing the emulated GPU) raises what the GPU raises (the error is built by
:mod:`blackwell_compat.emulation`), after telling ``audit``'s recorder.  CUDA tensors, calls in
a suspended thread and an arch the NVRTC remedy serves reach the original.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from . import state
from .errors import NVRTC_ARCH_ERROR_LINE, logger
from .ops.spec import MODE_EMULATE, MODE_REMEDY, JitCall

__all__ = ["USER_OP", "installed", "record", "set_failure", "sync"]

#: :attr:`JitCall.op` of a user Jiterator kernel's record.
USER_OP = "torch.cuda.jiterator"


def record(target: Any, tensors: tuple[Any, ...], mode: str) -> JitCall:
    """The record of a call of the user kernel *target* on *tensors*."""
    import torch

    dtypes = [t.dtype for t in tensors if isinstance(t, torch.Tensor)]
    code = " ".join(str(getattr(target, "code_string", "")).split())
    name = str(getattr(target, "kernel_name", "") or "<jiterator kernel>")
    return JitCall(
        op=USER_OP,
        entry=name,
        dtype=str(dtypes[0]).replace("torch.", "") if dtypes else "",
        shapes=tuple(tuple(t.shape) for t in tensors if isinstance(t, torch.Tensor)),
        device="cpu",
        kernels=(name,),
        source=f"user code: {code[:160]}",
        mode=mode,
    )


class _Watch:
    """The wrapper of ``_JittedFunction.__call__`` and what it needs (one object)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.cls: Any = None
        self.original: Callable[..., Any] | None = None
        self.wrapper: Callable[..., Any] | None = None
        self.failure: Callable[[JitCall, str], BaseException] | None = None
        self.hooked = False

    def wanted(self) -> bool:
        with state.lock:
            return bool(state.emulation_stack) or state.env_arch is not None

    def sync(self) -> None:
        if "torch" not in sys.modules:
            if self.wanted():
                self._hook()
            return
        with self.lock:
            if self.wanted():
                self._install()
            else:
                self._uninstall()

    def _hook(self) -> None:
        with self.lock:
            if self.hooked:
                return
            self.hooked = True
        import wrapt  # only before torch is imported (import cost)

        def on_torch(module: Any) -> None:
            self.hooked = False
            try:
                self.sync()
            except Exception as exc:  # never break `import torch`
                logger.warning("blackwell-compat: watching Jiterator kernels failed: %s", exc)

        wrapt.register_post_import_hook(on_torch, "torch")

    def _install(self) -> None:
        if self.original is not None:
            return
        import torch.cuda.jiterator as jiterator

        cls = getattr(jiterator, "_JittedFunction", None)
        if cls is None:  # pragma: no cover - every supported torch has it
            logger.warning("blackwell-compat: torch has no _JittedFunction; user kernels unseen")
            return
        original = cls.__call__
        watch = self

        def __call__(target: Any, *tensors: Any, **kwargs: Any) -> Any:
            return watch.call(original, target, tensors, kwargs)

        __call__.__qualname__ = "blackwell_compat_jiterator_call"
        cls.__call__ = __call__
        self.cls, self.original, self.wrapper = cls, original, __call__

    def _uninstall(self) -> None:
        if self.original is None:
            return
        if self.cls.__dict__.get("__call__") is self.wrapper:
            self.cls.__call__ = self.original
        else:
            logger.warning("blackwell-compat: _JittedFunction.__call__ was replaced; not restored")
        self.cls = self.original = self.wrapper = None

    def installed(self) -> bool:
        with self.lock:
            return self.original is not None

    def call(
        self, original: Callable[..., Any], target: Any, tensors: tuple[Any, ...], kwargs: Any
    ) -> Any:
        import torch

        arch = state.emulated_arch()
        on_cpu = [t for t in tensors if isinstance(t, torch.Tensor)]
        if arch is None or not on_cpu or any(t.device.type != "cpu" for t in on_cpu):
            return original(target, *tensors, **kwargs)
        recorder = state.recorder
        if arch in state.nvrtc_served_archs:
            if recorder is not None:
                recorder(record(target, tensors, MODE_REMEDY))
            return original(target, *tensors, **kwargs)
        call = record(target, tensors, MODE_EMULATE)
        if recorder is not None:
            recorder(call)
        factory = self.failure
        if factory is not None:
            raise factory(call, arch)
        raise RuntimeError(f"{NVRTC_ARCH_ERROR_LINE}\n\n[blackwell-compat emulation] {call.kernel}")


watch = _Watch()
"""The one watch of this process."""


def sync() -> None:
    """Wrap user Jiterator kernels while emulation is armed; unwrap when it ends."""
    watch.sync()


def installed() -> bool:
    return watch.installed()


def set_failure(factory: Callable[[JitCall, str], BaseException]) -> None:
    """The emulation's error for a user kernel (``record, arch``)."""
    watch.failure = factory


def _reset() -> None:
    with watch.lock:
        if "torch" in sys.modules:
            watch._uninstall()


state.on_reset(_reset)
