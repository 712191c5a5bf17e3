"""Which tensors live on an "affected" device, as far as the patches are concerned.

- A CUDA device is affected when its architecture is missing from the loaded NVRTC's list
  (decided once per device index), or when the patches were applied with ``force=True``.
- A CPU tensor counts as living on the affected device while emulation is active, unless the
  emulated CUDA device is installed: then its tensors (``cuda:0``) are on the affected device
  and CPU tensors are plain CPU tensors.

On a machine with several GPUs only tensors on affected devices take the rewrites; tensors on
other GPUs reach the original kernels.
"""

from __future__ import annotations

from typing import Any

from . import state
from .config import capability_to_arch
from .probing import probe


def set_forced(value: bool) -> None:
    with state.lock:
        state.forced = bool(value)


def is_forced() -> bool:
    return state.forced


def forget_cuda_verdicts() -> None:
    with state.lock:
        state.cuda_verdicts.clear()


def cuda_device_affected(index: int) -> bool:
    """Whether the Jiterator cannot compile for CUDA device *index* (torch numbering)."""
    with state.lock:
        cached = state.cuda_verdicts.get(index)
    if cached is not None:
        return cached
    import torch  # only asked about tensors, so torch is imported already

    major, minor = torch.cuda.get_device_capability(index)
    arch = capability_to_arch(major, minor)
    nvrtc = probe().nvrtc
    verdict = nvrtc.jiterator_fails_for(arch)
    with state.lock:
        state.cuda_verdicts[index] = verdict
    return verdict


def device_targeted(device: Any) -> bool:
    """Whether ops on *device* (a ``torch.device``) must avoid the Jiterator."""
    kind = device.type
    if kind == "cuda":
        if state.device_mode:  # the emulated CUDA device: affected while emulation is active
            return state.emulation_active()
        if state.forced:
            return True
        index = device.index if device.index is not None else 0
        return cuda_device_affected(index)
    if kind == "cpu":
        return state.emulation_active() and not state.device_mode
    return False


def tensor_targeted(tensor: Any) -> bool:
    return device_targeted(tensor.device)
