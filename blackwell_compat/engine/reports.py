"""The engine's answers, as data: where a patch stands (:class:`PatchStatus`), what one
``apply()`` did (:class:`ApplyReport`), whether a patch would apply (:class:`Evaluation`) and
which rung of the remedy ladder serves a GPU (:class:`GpuService`).  No behaviour here."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

APPLIED = "applied"
PENDING = "pending-import"
SKIPPED = "skipped"
FAILED = "failed"
DRIFT = "drift"
NOT_APPLIED = "not-applied"


@dataclass(frozen=True)
class PatchStatus:
    """Where one known patch stands in this process, and why."""

    name: str
    state: str
    reason: str
    summary: str = ""
    distribution: str | None = None
    installed: str | None = None
    supported: str = ""
    strategy: str | None = None
    strategies: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    provider: str | None = None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["strategies"] = list(self.strategies)
        data["modules"] = list(self.modules)
        data["notes"] = list(self.notes)
        return data


#: The rungs of the remedy ladder (docs/remedies.md), cheapest first.
RUNG_NOT_AFFECTED = "not-affected"
RUNG_NVRTC_REMEDY = "nvrtc-remedy"
RUNG_PATCHES = "patches"
RUNG_FUSER = "fuser"
RUNG_UNSERVED = "unserved"


@dataclass(frozen=True)
class GpuService:
    """Which rung of the remedy ladder serves one GPU (real or emulated), and why a cheaper one
    could not: the answer of :func:`ladder`.

    ``rung``: ``"not-affected"`` (torch's own NVRTC lists the arch), ``"nvrtc-remedy"`` (a
    capable NVRTC loaded in place of torch's: nothing is patched), ``"patches"`` (targeted
    patches and the op guard, the fuser rung among them when ``"fuser"`` is in ``patches``;
    ``why`` says why the NVRTC remedy could not serve), ``"fuser"`` (the fuser rung alone:
    the other patches were excluded) or ``"unserved"`` (affected, and no rung serves:
    ``apply()`` patched nothing).  ``triton`` says what the ptxas remedy did for
    ``torch.compile`` there, or why nothing; ``fuser`` what serves fused TorchScript kernels
    there (the NVRTC remedy, the fuser rung, the user's own setting) or why nothing does.
    ``planned``: the answer is what :func:`~blackwell_compat.apply` would do (it has not run
    in this process, or the caller asked for the plan); ``source``, when the NVRTC remedy
    serves, names its library and where it was found (``NVRTC 13.2 at <path> (the project's
    cache)``).
    """

    gpu: str
    arch: str
    rung: str
    why: str
    patches: tuple[str, ...] = ()
    """The patches applied (or pending) in this process when the rung is ``"patches"``."""
    triton: str = ""
    planned: bool = False
    source: str | None = None
    fuser: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["patches"] = list(self.patches)
        data["user_kernels"] = self.user_kernels
        return data

    @property
    def user_kernels(self) -> str:
        """What serves the Jiterator kernels a program writes itself
        (``torch.cuda.jiterator._create_jit_fn``) here: only the NVRTC remedy can, since no
        rung rewrites user C++ code."""
        if self.rung == RUNG_NVRTC_REMEDY:
            return "served by the NVRTC remedy"
        if self.rung == RUNG_NOT_AFFECTED:
            return "compiled by torch's own NVRTC (not affected)"
        return (
            "NOT SERVED: only the NVRTC remedy serves them (no rung rewrites user C++ code; "
            "`python -m blackwell_compat fetch nvrtc`)"
        )

    def __str__(self) -> str:
        served = {
            RUNG_NOT_AFFECTED: "not affected",
            RUNG_NVRTC_REMEDY: "NVRTC remedy",
            RUNG_PATCHES: f"patches ({', '.join(self.patches)})",
            RUNG_FUSER: "fuser rung",
            RUNG_UNSERVED: "NOT SERVED",
        }.get(self.rung, self.rung)
        line = f"{self.gpu}: {served}: {self.why}"
        if self.triton:
            line += f"; torch.compile: {self.triton}"
        return f"{line}; fused TorchScript kernels: {self.fuser}" if self.fuser else line


@dataclass(frozen=True)
class ApplyReport:
    """What one :func:`apply` call did, patch by patch."""

    entries: tuple[PatchStatus, ...]
    forced: bool = False
    gpus: tuple[GpuService, ...] = ()
    """Per GPU, which rung of the remedy ladder serves it after this call (:func:`ladder`)."""

    def _names(self, *states: str) -> list[str]:
        return [e.name for e in self.entries if e.state in states]

    @property
    def applied(self) -> list[str]:
        return self._names(APPLIED)

    @property
    def pending(self) -> list[str]:
        return self._names(PENDING)

    @property
    def skipped(self) -> dict[str, str]:
        return {e.name: e.reason for e in self.entries if e.state == SKIPPED}

    @property
    def failed(self) -> dict[str, str]:
        return {e.name: e.reason for e in self.entries if e.state in (FAILED, DRIFT)}

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "forced": self.forced,
            "patches": [e.as_dict() for e in self.entries],
            "gpus": [g.as_dict() for g in self.gpus],
        }

    def __str__(self) -> str:
        gpus = [str(g) for g in self.gpus]
        if not self.entries:
            return "\n".join(["blackwell-compat: no patches selected", *gpus])
        width = max(len(e.name) for e in self.entries)
        lines = [f"{e.name:<{width}}  {e.state:<14}  {e.reason}" for e in self.entries]
        return "\n".join([*lines, *gpus])


@dataclass(frozen=True)
class Evaluation:
    """Would this patch apply here, and why: the answer of :func:`evaluate`.

    ``gate`` names the first condition that says no (``None`` when every one holds):
    ``"load"`` (the entry point did not load), ``"disabled"`` (``BLACKWELL_COMPAT_DISABLE``),
    ``"version"`` (the target is not installed or outside ``supported``), ``"config"`` (a
    malformed library variable: ``apply()`` would raise), ``"device"`` (no affected GPU and no
    ``force``) or ``"drift"`` (an already imported target fails the patch's drift check; a
    target not imported yet is checked when it is).  ``reason`` says it in words.
    ``state``/``state_reason`` say where the patch stands in this process, as in ``status()``.
    """

    name: str
    provider: str | None
    entry_point: str
    loaded: bool
    would_apply: bool
    gate: str | None
    reason: str
    state: str
    state_reason: str
    error: str | None = None
    summary: str = ""
    distribution: str | None = None
    supported: str = ""
    installed: str | None = None
    modules: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ()
    strategy: str | None = None
    requires_affected: bool = True
    device_checked: bool = True
    drift: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("modules", "strategies", "drift"):
            data[key] = list(data[key])
        return data


#: Which condition keeps a patch from applying (:attr:`Evaluation.gate`).
GATE_LOAD = "load"
GATE_DISABLED = "disabled"
GATE_VERSION = "version"
GATE_CONFIG = "config"
GATE_DEVICE = "device"
GATE_DRIFT = "drift"
