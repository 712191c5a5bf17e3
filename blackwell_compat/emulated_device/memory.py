"""The emulated device's memory counters: bytes of the storages its live tensors hold.

``torch.cuda.memory_allocated()`` is what programs read to choose a model by VRAM and what
tests assert after freeing; the emulated device counts every CPU storage behind one of its
tensors once (views share it), from the moment a tensor is made until its last tensor dies.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch

__all__ = ["MemoryBook"]


class MemoryBook:
    """Live bytes and their peak, keyed by storage; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._storages: dict[int, list[int]] = {}  # data pointer -> [live tensors, bytes]
        self.allocated = 0
        self.peak = 0

    def track(self, elem: Any) -> None:
        """Count *elem*'s storage while *elem* (the CPU tensor behind a device tensor) lives."""
        if elem.layout is not torch.strided:
            return  # sparse and other layouts: their parts are dense tensors of their own
        storage = elem.untyped_storage()
        nbytes = storage.nbytes()
        if nbytes == 0:
            return
        key = storage.data_ptr()
        with self._lock:
            entry = self._storages.get(key)
            if entry is None:
                self._storages[key] = [1, nbytes]
                self.allocated += nbytes
            else:
                entry[0] += 1
                if nbytes > entry[1]:  # resized in place
                    self.allocated += nbytes - entry[1]
                    entry[1] = nbytes
            if self.allocated > self.peak:
                self.peak = self.allocated
        weakref.finalize(elem, self._release, key)

    def _release(self, key: int) -> None:
        with self._lock:
            entry = self._storages.get(key)
            if entry is None:
                return
            entry[0] -= 1
            if entry[0] == 0:
                del self._storages[key]
                self.allocated -= entry[1]

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.allocated
