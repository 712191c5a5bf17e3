"""The emulated CUDA device: ``bc.emulate(arch, device="cuda")`` runs a GPU program on the CPU.

While installed, the process has one CUDA device, ``cuda:0``, of the emulated architecture,
backed by CPU memory: ``torch.cuda.is_available()`` is True, factories with ``device="cuda"``,
``.to("cuda")``, ``.cuda()``, ``nn.Module.to``, ``torch.load(map_location="cuda")`` give
:class:`~.tensor.EmulatedTensor` objects, and the ``torch.cuda`` API answers for that GPU
(:mod:`.cuda_api`).  Ops on its tensors run the CPU kernels with the thread marked "on the
device", so the emulation's Jiterator failure (and ``apply()``'s op guard) applies to them and
never to plain CPU tensors.  :class:`.controller.EmulatedCuda` installs and removes all of
it; what it replaced is put back exactly when the last block that asked for it ends.

Not emulated (each a clear error, never a process abort): CUDA graphs, IPC, the allocator's
snapshots and limits, user Jiterator kernels (they raise the NVRTC error under emulation, as on
the affected GPU), DLPack, data pointers and storages of device tensors.
"""

from __future__ import annotations

import sys

from .. import state
from ..errors import logger

__all__ = ["sync", "wanted_arch"]


def wanted_arch() -> str | None:
    """The architecture of the CUDA device the emulation in force asks for, or ``None``."""
    with state.lock:
        if state.device_stack:
            if state.device_stack[-1] == "cuda":
                return state.emulation_stack[-1]
            return None
        if state.env_device == "cuda":
            return state.env_arch
    return None


def sync() -> None:
    """Install, re-target or remove the emulated device to match the emulation in force.

    Before ``import torch`` has finished, installing waits for it (a post-import hook calls
    this again): the device wraps torch, and importing torch here would cost every program
    that asks for emulation before it uses torch.
    """
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "cuda"):
        if wanted_arch() is not None:
            import wrapt  # the post-import hook (the dispatcher kernels use the same)

            wrapt.register_post_import_hook(_sync_after_import, "torch")
        return
    with state.lock:
        arch = wanted_arch()
        current = state.emulated_cuda
        if arch is None:
            if current is not None:
                state.emulated_cuda = None
                state.device_mode = False
                current.uninstall()
            return
        if current is None:
            from .controller import EmulatedCuda  # imports torch: only when a device is wanted

            device = EmulatedCuda(arch)
            device.install()
            state.emulated_cuda = device
            state.device_mode = True
        elif current.arch != arch:
            current.set_arch(arch)


def _sync_after_import(module: object) -> None:
    try:
        sync()
    except Exception as exc:  # never break `import torch`
        logger.warning("blackwell-compat: installing the emulated CUDA device failed: %s", exc)


def _reset() -> None:
    sync()


state.on_reset(_reset)
