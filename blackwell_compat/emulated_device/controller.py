"""One installation of the emulated CUDA device: what it replaced, its memory, its generator.

:func:`blackwell_compat.emulated_device.sync` makes one when the emulation in force asks for a
``cuda`` device and calls :meth:`EmulatedCuda.uninstall` when none does any more, which puts
every replaced attribute back (``torch.cuda`` functions, ``torch.Tensor`` methods,
``torch.Generator``, ``torch.load``) and pops the function mode.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.backends.cudnn
import torch.cuda.jiterator

from .. import state
from ..errors import NVRTC_ARCH_ERROR_LINE
from .cuda_api import Streams, device_properties, functions
from .memory import MemoryBook
from .mode import DeviceMode, EmulatedGenerator, PinnedSet, emulated_load, tensor_methods
from .tensor import refuse

__all__ = ["EmulatedCuda"]


class EmulatedCuda:
    """One installation of the emulated CUDA device (kept on :data:`.state.emulated_cuda`)."""

    def __init__(self, arch: str) -> None:
        self.arch = arch
        self.properties = device_properties(arch)
        self.memory = MemoryBook()
        # One random stream for the CPU and the device: a program draws the same numbers on
        # the emulated device as on the CPU, so its results can be compared with a CPU run.
        self.generator = torch.default_generator
        self.streams = Streams()
        self.pinned = PinnedSet()
        self._saved: list[tuple[Any, str, Any, bool]] = []
        self._mode: Any = None

    def set_arch(self, arch: str) -> None:
        self.arch = arch
        self.properties = device_properties(arch)
        self._install_cuda_api()

    def user_jiterator_error(self, code: Any) -> BaseException:
        """What calling a user Jiterator kernel raises on the emulated device."""
        first = str(code).strip().splitlines()[0] if str(code).strip() else "<empty>"
        if state.emulation_active():
            return RuntimeError(
                f"{NVRTC_ARCH_ERROR_LINE}\n\n[blackwell-compat emulation of {self.arch}] a "
                f"torch.cuda.jiterator kernel ({first!r}) is compiled at run time with NVRTC, "
                f"which fails for {self.arch}. Fix: give torch an NVRTC that knows {self.arch} "
                "(`python -m blackwell_compat fetch nvrtc`) or rewrite the kernel with torch ops."
            )
        return refuse(
            f"Running the user Jiterator kernel {first!r}",
            "An NVRTC that knows the arch is loaded, but only a real GPU runs CUDA C++: test "
            "the kernel on one.",
        )

    # -- install / uninstall ----------------------------------------------------------------------

    def _replace(self, owner: Any, name: str, value: Any) -> None:
        had = name in vars(owner)
        self._saved.append((owner, name, vars(owner).get(name), had))
        setattr(owner, name, value)

    def _install_cuda_api(self) -> None:
        for name, value in functions(self).items():
            owner: Any = torch.cuda
            if name.startswith("jiterator."):
                owner, name = torch.cuda.jiterator, name.split(".", 1)[1]
            self._replace(owner, name, value)

    def install(self) -> None:
        self._install_cuda_api()
        for name, value in tensor_methods(self.pinned).items():
            self._replace(torch.Tensor, name, value)
        self._replace(torch, "Generator", EmulatedGenerator)
        # No cuDNN kernels on the device: RNNs take PyTorch's own path (the flags stay settings).
        self._replace(torch.backends.cudnn, "is_acceptable", _no_cudnn)
        self._replace(torch, "load", emulated_load(torch.load))
        self._mode = DeviceMode()
        self._mode.__enter__()

    def uninstall(self) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        for owner, name, value, had in reversed(self._saved):
            if had:
                setattr(owner, name, value)
            else:
                delattr(owner, name)
        self._saved.clear()


def _no_cudnn(tensor: Any) -> bool:
    return False
