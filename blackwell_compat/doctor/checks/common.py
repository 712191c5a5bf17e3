"""Text helpers shared by the doctor's checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..hints import Fix

if TYPE_CHECKING:
    from ...probing import GPU


def label(gpu: GPU) -> str:
    """``sm_121 (NVIDIA GB10)``, or ``emulated sm_121`` for the emulated GPU."""
    return f"emulated {gpu.arch}" if gpu.emulated else f"{gpu.arch} ({gpu.name})"


def gpu_line(gpu: GPU) -> str:
    if gpu.emulated:
        return f"emulated {gpu.arch} (CPU tensors play its part)"
    cap = f"{gpu.capability[0]}.{gpu.capability[1]}" if gpu.capability else "?"
    extra = f", PCI {gpu.pci_bus_id}" if gpu.pci_bus_id else ""
    return f"GPU {gpu.index}: {gpu.name}, compute capability {cap}, {gpu.arch}{extra}"


def short_list(items: Sequence[str], limit: int = 12) -> str:
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:3]) + ", …, " + ", ".join(items[-(limit - 4) :])


def dedupe(fixes: Sequence[Fix]) -> list[Fix]:
    seen: set[tuple[str, tuple[str, ...]]] = set()
    result = []
    for fix in fixes:
        key = (fix.text, fix.commands)
        if key not in seen:
            seen.add(key)
            result.append(fix)
    return result
