"""Which rung of the remedy ladder serves each GPU (docs/remedies.md), from what the probe,
the remedies and the patches say: :func:`services`.  :func:`blackwell_compat.engine.ladder`
feeds it the patches of this process, or of a plan."""

from __future__ import annotations

from ..probing import Platform
from ..remedies import fuser as fuser_rung
from ..remedies import nvrtc as nvrtc_remedy
from ..remedies import ptxas as ptxas_remedy
from .reports import (
    RUNG_FUSER,
    RUNG_NOT_AFFECTED,
    RUNG_NVRTC_REMEDY,
    RUNG_PATCHES,
    RUNG_UNSERVED,
    GpuService,
)

FUSER_PATCH = "fuser"
"""The patch that is the fuser rung (:mod:`blackwell_compat.patches.fuser`)."""
FUSER_BY_REMEDY = "nothing to do: the NVRTC remedy compiles them (GPU fusion stays on)"
"""The fuser line of a GPU the NVRTC remedy serves."""

EMULATED_TRITON = (
    "nothing to do: the ptxas remedy serves real GPUs; CPU tensors standing in for the emulated "
    "one are never compiled by Triton"
)


def _triton_line(arch: str, *, emulated: bool, planned: bool) -> str:
    """What the ptxas remedy did for ``torch.compile`` on this GPU, or why it did nothing."""
    if emulated:
        return EMULATED_TRITON
    report = {r.arch: r for r in ptxas_remedy.reports()}.get(arch)
    if report is None:
        if planned:
            return (
                "not checked yet: apply() tests the ptxas Triton would run for this GPU and, "
                "if it rejects the arch, points Triton at one that accepts it"
            )
        return "not checked in this process (apply() checks it for the GPUs it finds)"
    if report.active:
        return f"ptxas remedy ({report.variable}={report.path}, ptxas {report.version})"
    return report.reason


def _fuser_line(rung: str, patches: tuple[str, ...], *, planned: bool) -> str:
    """What serves fused TorchScript kernels on a GPU of this *rung*, or why nothing does."""
    if rung == RUNG_NVRTC_REMEDY:
        return FUSER_BY_REMEDY
    if rung == RUNG_NOT_AFFECTED:
        return "nothing to do: torch's NVRTC compiles them for this GPU"
    if FUSER_PATCH not in patches:
        if fuser_rung.gpu_fusion_on() is False:
            return f"{fuser_rung.off_why()}: scripted functions run op by op"
        return (
            "NOT SERVED: fused kernels compile with torch's NVRTC and fail (the fuser rung is "
            "not applied: excluded, disabled or outside its torch range)"
        )
    if planned and fuser_rung.gpu_fusion_on() is False:
        return f"{fuser_rung.off_why()}: the fuser rung would leave it so"
    if planned:
        return (
            f"the fuser rung would turn GPU fusion off at apply() "
            f"(torch._C.{fuser_rung.SWITCH}(False)); {fuser_rung.COST}"
        )
    current = fuser_rung.state()
    if current.status == fuser_rung.INACTIVE:
        return "the fuser rung waits for `import torch` to turn GPU fusion off"
    prefix = "NOT SERVED: " if current.status == fuser_rung.TURNED_ON else "fuser rung: "
    return prefix + current.describe()


def services(
    here: Platform,
    remedy: nvrtc_remedy.RemedyState,
    patches: tuple[str, ...],
    *,
    planned: bool,
    forced: bool,
) -> tuple[GpuService, ...]:
    """One :class:`GpuService` per GPU of *here*: *remedy* is the NVRTC remedy's state (or
    plan, when *planned*), *patches* the device-gated patches serving (or that would).  Every
    service says what the ptxas remedy did for ``torch.compile`` there, or why nothing, and what
    serves fused TorchScript kernels there (the fuser rung is the ``fuser`` patch)."""
    services = []
    for gpu in here.gpus:
        if gpu.emulated:
            label = f"emulated {gpu.arch} (CPU tensors)"
        else:
            label = f"GPU {gpu.index} {gpu.name} ({gpu.arch})"
        triton = _triton_line(gpu.arch, emulated=gpu.emulated, planned=planned)
        served = gpu.arch in remedy.served and not gpu.affected
        would_serve = (
            planned
            and remedy.status == nvrtc_remedy.AVAILABLE
            and gpu.arch in remedy.needed
            and gpu.arch in remedy.archs
        )
        serving: tuple[str, ...]
        if served or would_serve:
            rung, why, serving = RUNG_NVRTC_REMEDY, remedy.describe(), ()
        elif not gpu.affected and not forced:
            rung, why, serving = RUNG_NOT_AFFECTED, gpu.reason, ()
        elif patches:
            alone = patches == (FUSER_PATCH,)
            rung = RUNG_FUSER if alone else RUNG_PATCHES
            why, serving = remedy.describe(), patches
        else:
            none = "no patch would apply" if planned else "no patch is applied in this process"
            rung, why, serving = RUNG_UNSERVED, f"{gpu.reason}; {none}; {remedy.describe()}", ()
        services.append(
            GpuService(
                label,
                gpu.arch,
                rung,
                why,
                patches=serving,
                triton=triton,
                planned=planned,
                source=remedy.source() if rung == RUNG_NVRTC_REMEDY else None,
                fuser=_fuser_line(rung, serving, planned=planned),
            )
        )
    return tuple(services)
