"""The platform verdict: which GPUs the loaded NVRTC cannot compile for, and why.

:func:`build_platform` is pure: it turns facts (GPUs, driver, NVRTC, versions, emulation) into a
:class:`Platform` with a verdict per GPU.  :func:`probe` gathers the real facts once (NVML,
NVRTC discovery, package metadata), caches them and overlays the emulated GPU on every call.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .. import state
from ..config import parse_arch
from ..errors import logger
from ..versions import installed_version
from .isolation import read_nvml
from .locate import find_nvrtc, locate_torch
from .nvml import GPU, DriverInfo
from .nvrtc import JITERATOR_SASS_SINCE, NvrtcInfo

#: Distributions whose versions the probe reports besides torch and torchaudio.
LIBRARIES: tuple[str, ...] = (
    "kokoro",
    "chatterbox-tts",
    "s3tokenizer",
    "openai-whisper",
    "pyannote.audio",
    "TTS",
    "coqui-tts",
    "triton",
)

_SHOWN_ARCHS = 4


@dataclass(frozen=True)
class SystemInfo:
    """Facts about the interpreter and the OS."""

    os: str
    machine: str
    python: str
    cuda_visible_devices: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "os": self.os,
            "machine": self.machine,
            "python": self.python,
            "cuda_visible_devices": self.cuda_visible_devices,
        }


def current_system() -> SystemInfo:
    import os
    import platform

    return SystemInfo(
        os=platform.system() or sys.platform,
        machine=platform.machine(),
        python=platform.python_version(),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


@dataclass(frozen=True)
class Platform:
    """Everything the probe knows, with the verdict.

    ``affected`` is True when at least one GPU (real or emulated) cannot run PyTorch's
    run-time compiled kernels; ``reasons`` says why ``affected`` is what it is (the affected
    GPUs' reasons when True, why nothing is affected when False).
    """

    gpus: tuple[GPU, ...]
    driver: DriverInfo
    nvrtc: NvrtcInfo
    torch: str | None
    torch_cuda: str | None
    torchaudio: str | None
    libraries: Mapping[str, str | None] = field(hash=False)
    system: SystemInfo
    emulated_arch: str | None
    affected: bool
    reasons: tuple[str, ...]

    @property
    def affected_gpus(self) -> tuple[GPU, ...]:
        return tuple(gpu for gpu in self.gpus if gpu.affected)

    @property
    def real_gpus(self) -> tuple[GPU, ...]:
        return tuple(gpu for gpu in self.gpus if not gpu.emulated)

    @property
    def native_failures(self) -> tuple[str, ...]:
        """One line per native library that crashed, hung or was killed in its test process
        (and so was never loaded here), with its path and what happened."""
        found = []
        if self.driver.crash:
            found.append(f"NVML at {self.driver.library}: a test process {self.driver.crash}")
        if self.nvrtc.crash:
            found.append(f"NVRTC at {self.nvrtc.path}: a test process {self.nvrtc.crash}")
        return tuple(found)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (``json.dumps(platform.as_dict())`` works)."""
        return {
            "affected": self.affected,
            "reasons": list(self.reasons),
            "emulated_arch": self.emulated_arch,
            "gpus": [gpu.as_dict() for gpu in self.gpus],
            "driver": self.driver.as_dict(),
            "nvrtc": self.nvrtc.as_dict(),
            "torch": self.torch,
            "torch_cuda": self.torch_cuda,
            "torchaudio": self.torchaudio,
            "libraries": dict(self.libraries),
            "system": self.system.as_dict(),
        }


def _arch_list(archs: Sequence[str]) -> str:
    if len(archs) <= _SHOWN_ARCHS + 1:
        return ", ".join(archs)
    return "…, " + ", ".join(archs[-_SHOWN_ARCHS:])


def judge(gpu: GPU, nvrtc: NvrtcInfo) -> GPU:
    """*gpu* with ``affected`` and ``reason`` set from the facts of *nvrtc*."""
    label = gpu.label()
    if nvrtc.path is None:
        why = nvrtc.error or "no NVRTC library found"
        return replace(gpu, affected=False, reason=f"cannot judge {label}: {why}")
    if nvrtc.version is None or not nvrtc.supported_archs:
        why = nvrtc.error or f"{nvrtc.describe()} did not report its archs"
        return replace(gpu, affected=False, reason=f"cannot judge {label}: {why}")
    where = nvrtc.describe()
    if nvrtc.version < JITERATOR_SASS_SINCE:
        return replace(
            gpu,
            affected=False,
            reason=(
                f"{where} is older than 11.8: PyTorch's run-time compiled kernels fall back "
                f"to PTX there, so {label} is not affected"
            ),
        )
    listed = _arch_list(nvrtc.supported_archs)
    if nvrtc.jiterator_fails_for(gpu.arch):
        return replace(
            gpu,
            affected=True,
            reason=(
                f"{label} is not in the archs {where} supports ({listed}): "
                "PyTorch's run-time compiled kernels will fail"
            ),
        )
    return replace(
        gpu, affected=False, reason=f"{label} is in the archs {where} supports ({listed})"
    )


def emulated_gpu(arch: str, nvrtc: NvrtcInfo, emulation_source: str | None = None) -> GPU:
    """The stand-in GPU of emulation: affected by construction."""

    normalised = parse_arch(arch, source="emulated_arch")
    by = emulation_source or "emulation"
    if nvrtc.replaces is not None and nvrtc.supports(normalised) is True:
        # Issue 12: emulation stands in for torch's own NVRTC only; one loaded in its place
        # (the NVRTC remedy) is judged by its real list.
        return GPU(
            index=-1,
            name=f"emulated {normalised} (CPU tensors)",
            arch=normalised,
            emulated=True,
            affected=False,
            reason=(
                f"{normalised} is emulated ({by}), and served: torch will call "
                f"{nvrtc.describe()}, loaded in place of its own {nvrtc.replaces}, which "
                f"lists {normalised}"
            ),
        )
    real = ""
    supported = nvrtc.supports(normalised)
    if supported is True:
        real = f"; the real {nvrtc.describe()} does list {normalised}"
    elif supported is False:
        real = f"; the real {nvrtc.describe()} does not list {normalised} either"
    reason = (
        f"{normalised} is emulated ({by}): Jiterator-bound ops on CPU tensors raise the "
        f"NVRTC error an affected GPU raises{real}"
    )
    return GPU(
        index=-1,
        name=f"emulated {normalised} (CPU tensors)",
        arch=normalised,
        emulated=True,
        affected=True,
        reason=reason,
    )


def build_platform(
    *,
    gpus: Sequence[GPU] = (),
    driver: DriverInfo | None = None,
    nvrtc: NvrtcInfo | None = None,
    versions: Mapping[str, str | None] | None = None,
    torch_cuda: str | None = None,
    system: SystemInfo | None = None,
    emulated_arch: str | None = None,
    emulation_source: str | None = None,
) -> Platform:
    """Compute the verdicts from facts.  Pure: reads nothing from the machine.

    *gpus* may carry any verdict; it is recomputed.  *versions* maps distribution names to
    versions (``"torch"``, ``"torchaudio"`` and any of :data:`LIBRARIES`); missing names count
    as not installed.  Defaults: no driver, no NVRTC, a neutral system.
    """
    nvrtc_info = nvrtc if nvrtc is not None else NvrtcInfo(error="NVRTC was not probed")
    if driver is None:
        driver = (
            DriverInfo(available=True)
            if gpus
            else DriverInfo(available=False, error="no NVIDIA driver (none given)")
        )
    known = dict(versions or {})
    judged = [judge(gpu, nvrtc_info) for gpu in gpus if not gpu.emulated]
    if emulated_arch is not None:
        judged.append(emulated_gpu(emulated_arch, nvrtc_info, emulation_source))
    affected = any(gpu.affected for gpu in judged)
    if affected:
        reasons = tuple(gpu.reason for gpu in judged if gpu.affected)
    elif judged:
        reasons = tuple(gpu.reason for gpu in judged)
    elif not driver.available:
        reasons = (driver.error or "no NVIDIA driver",)
    elif any(note.startswith("GPU ") for note in driver.notes):
        skipped = "; ".join(note for note in driver.notes if note.startswith("GPU "))
        reasons = (f"NVML lists no GPU the probe could read ({skipped})",)
    else:
        reasons = ("NVML lists no NVIDIA GPU",)
    libraries = {name: known.get(name) for name in LIBRARIES}
    libraries.update(
        {name: value for name, value in known.items() if name not in ("torch", "torchaudio")}
    )
    return Platform(
        gpus=tuple(judged),
        driver=driver,
        nvrtc=nvrtc_info,
        torch=known.get("torch"),
        torch_cuda=torch_cuda,
        torchaudio=known.get("torchaudio"),
        libraries=MappingProxyType(libraries),
        system=system if system is not None else SystemInfo(os="", machine="", python=""),
        emulated_arch=emulated_gpu(emulated_arch, nvrtc_info).arch if emulated_arch else None,
        affected=affected,
        reasons=reasons,
    )


# -- the real machine ---------------------------------------------------------------------------


def read_versions(distributions: Sequence[str] | None = None) -> dict[str, str | None]:
    """Installed versions of torch, torchaudio and :data:`LIBRARIES`, from package metadata."""

    names = distributions if distributions is not None else ("torch", "torchaudio", *LIBRARIES)
    return {name: installed_version(name) for name in names}


@dataclass(frozen=True)
class _Facts:
    gpus: tuple[GPU, ...]
    driver: DriverInfo
    nvrtc: NvrtcInfo
    versions: Mapping[str, str | None] = field(hash=False)
    torch_cuda: str | None
    system: SystemInfo


_lock = threading.Lock()
_facts: _Facts | None = None


def _gather(retest: bool = False, timeout: float | None = None) -> _Facts:
    driver, gpus = read_nvml(retest=retest, timeout=timeout)
    torch = locate_torch()
    nvrtc = find_nvrtc(torch=torch, retest=retest, timeout=timeout)
    versions = read_versions()
    if versions.get("torch") is None and torch.version is not None:
        versions["torch"] = torch.version
    facts = _Facts(
        gpus=gpus,
        driver=driver,
        nvrtc=nvrtc,
        versions=MappingProxyType(versions),
        torch_cuda=torch.cuda,
        system=current_system(),
    )
    logger.debug(
        "probe: %d GPU(s), driver %s, %s, torch %s (CUDA %s)",
        len(gpus),
        driver.driver_version or driver.error,
        nvrtc.describe(),
        versions.get("torch"),
        torch.cuda,
    )
    return facts


def _emulation_state() -> tuple[str | None, str | None]:
    """The emulated arch in force and what turned it on."""
    return state.emulated_arch(), state.emulation_source()


def probe(refresh: bool = False) -> Platform:
    """The platform facts and verdicts; real facts are cached, ``refresh=True`` re-reads them.

    Never imports torch and never raises.  NVML and NVRTC are loaded and called in a test
    process first (see :mod:`blackwell_compat.probing.isolation`): a crash, a hang or nonsense
    from either becomes part of the answer, with the library's path and what happened.  While
    emulation is active the result also holds an emulated, affected GPU; that part is
    recomputed on every call.
    """
    return _probe(refresh=refresh, retest=False, timeout=None)


def retest(timeout: float | None = None) -> Platform:
    """:func:`probe` after testing every native library afresh in a child process (ignoring
    stored verdicts); the doctor uses it.  *timeout* bounds each test process."""
    return _probe(refresh=True, retest=True, timeout=timeout)


def _probe(*, refresh: bool, retest: bool, timeout: float | None) -> Platform:
    global _facts
    try:
        with _lock:
            if _facts is None or refresh:
                _facts = _gather(retest=retest, timeout=timeout)
            facts = _facts
    except Exception as exc:  # the contract: probe() answers, whatever it meets
        logger.debug("probe failed", exc_info=True)
        return _failed_platform(f"the platform probe failed: {type(exc).__name__}: {exc}")
    try:
        arch, source = _emulation_state()
    except Exception:  # pragma: no cover - emulation validates its arch when switched on
        logger.debug("emulation state unreadable", exc_info=True)
        arch, source = None, None
    try:
        return build_platform(
            gpus=facts.gpus,
            driver=facts.driver,
            nvrtc=facts.nvrtc,
            versions=facts.versions,
            torch_cuda=facts.torch_cuda,
            system=facts.system,
            emulated_arch=arch,
            emulation_source=source,
        )
    except Exception as exc:
        logger.debug("probe verdict failed", exc_info=True)
        return _failed_platform(f"the platform probe failed: {type(exc).__name__}: {exc}")


def _failed_platform(error: str) -> Platform:
    """A platform that affects nothing and says why the probe could not say more."""
    try:
        versions: dict[str, str | None] = read_versions()
    except Exception:
        versions = {}
    try:
        system = current_system()
    except Exception:
        system = SystemInfo(os=sys.platform, machine="", python="")
    return build_platform(
        driver=DriverInfo(available=False, error=error), versions=versions, system=system
    )


def forget() -> None:
    """Drop the cached facts (the next :func:`probe` re-reads them)."""
    global _facts
    with _lock:
        _facts = None
