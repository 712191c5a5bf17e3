"""Which rung of the remedy ladder serves each GPU (docs/remedies.md), from what the probe,
the remedies and the patches say: :func:`services`.  :func:`blackwell_compat.engine.ladder`
feeds it the patches of this process, or of a plan."""

from __future__ import annotations

from ..probing import Platform
from ..remedies import nvrtc as nvrtc_remedy
from ..remedies import ptxas as ptxas_remedy
from .reports import (
    RUNG_NOT_AFFECTED,
    RUNG_NVRTC_REMEDY,
    RUNG_PATCHES,
    RUNG_UNSERVED,
    GpuService,
)


def _triton_line(arch: str) -> str:
    report = {r.arch: r for r in ptxas_remedy.reports()}.get(arch)
    if report is None:
        return ""
    if report.active:
        return f"ptxas remedy ({report.variable}={report.path}, ptxas {report.version})"
    return report.reason


def services(
    here: Platform,
    remedy: nvrtc_remedy.RemedyState,
    patches: tuple[str, ...],
    *,
    planned: bool,
    forced: bool,
) -> tuple[GpuService, ...]:
    """One :class:`GpuService` per GPU of *here*: *remedy* is the NVRTC remedy's state (or
    plan, when *planned*), *patches* the device-gated patches serving (or that would)."""
    services = []
    for gpu in here.gpus:
        if gpu.emulated:
            label = f"emulated {gpu.arch} (CPU tensors)"
        else:
            label = f"GPU {gpu.index} {gpu.name} ({gpu.arch})"
        triton = "" if gpu.emulated else _triton_line(gpu.arch)
        served = gpu.arch in remedy.served and not gpu.affected
        would_serve = (
            planned
            and remedy.status == nvrtc_remedy.AVAILABLE
            and gpu.arch in remedy.needed
            and gpu.arch in remedy.archs
        )
        if served or would_serve:
            services.append(
                GpuService(label, gpu.arch, RUNG_NVRTC_REMEDY, remedy.describe(), triton=triton)
            )
        elif not gpu.affected and not forced:
            services.append(
                GpuService(label, gpu.arch, RUNG_NOT_AFFECTED, gpu.reason, triton=triton)
            )
        elif patches:
            services.append(
                GpuService(
                    label, gpu.arch, RUNG_PATCHES, remedy.describe(), patches=patches, triton=triton
                )
            )
        else:
            none = "no patch would apply" if planned else "no patch is applied in this process"
            why = f"{gpu.reason}; {none}; {remedy.describe()}"
            services.append(GpuService(label, gpu.arch, RUNG_UNSERVED, why, triton=triton))
    return tuple(services)
