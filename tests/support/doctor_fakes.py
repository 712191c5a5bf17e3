"""Fake machines for the doctor tests, built through the probe's injection points.

Only facts are faked (plain data); every verdict is computed by the real probe
(``build_platform``) and the real checks.  NVRTC facts come from real libraries where a test
passes one (the ``nvrtc_libraries`` fixture).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from blackwell_compat.doctor.facts import Facts, TorchaudioFacts, TorchDevice, TorchFacts
from blackwell_compat.engine import Evaluation, evaluate
from blackwell_compat.probing import (
    GPU,
    DriverInfo,
    NvrtcInfo,
    Platform,
    SystemInfo,
    build_platform,
)
from blackwell_compat.probing.ptxas import PtxasProbe, TritonFacts, triton_gpu_name
from blackwell_compat.registry import Patch, Registration

GB10 = GPU(0, "NVIDIA GB10", capability=(12, 1), pci_bus_id="0000000F:01:00.0")
RTX5090 = GPU(0, "NVIDIA GeForce RTX 5090", capability=(12, 0), pci_bus_id="00000000:01:00.0")
H100 = GPU(0, "NVIDIA H100 80GB HBM3", capability=(9, 0), pci_bus_id="00000000:18:00.0")
DRIVER = DriverInfo(
    available=True,
    library="libnvidia-ml.so.1",
    driver_version="580.95.05",
    cuda_driver_version=(13, 0),
)
NO_DRIVER = DriverInfo(
    available=False,
    library="libnvidia-ml.so.1",
    error=(
        "no NVIDIA driver: NVML could not be loaded (libnvidia-ml.so.1: cannot open shared "
        "object file: No such file or directory)"
    ),
)
SYSTEM = SystemInfo(os="Linux", machine="aarch64", python="3.12.3")
CU128_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")
CU124_ARCHS = ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")


def at(gpu: GPU, index: int) -> GPU:
    return replace(gpu, index=index)


def torch_cu128(gpus: Sequence[GPU], **changes: Any) -> TorchFacts:
    values: dict[str, Any] = dict(
        installed=True,
        version="2.8.0+cu128",
        cuda="12.8",
        arch_list=CU128_ARCHS,
        arch_list_source="torch.cuda.get_arch_list()",
        cuda_available=bool(gpus),
        devices=tuple(TorchDevice(i, g.name, g.capability or (0, 0)) for i, g in enumerate(gpus)),
    )
    values.update(changes)
    return TorchFacts(**values)


def audio_for(torch: TorchFacts, **changes: Any) -> TorchaudioFacts:
    values: dict[str, Any] = dict(
        installed=True,
        version=torch.version,
        native_loaded=True,
        cuda_version=torch.cuda,
        cpu_only=torch.cuda is None,
    )
    values.update(changes)
    return TorchaudioFacts(**values)


def triton_accepting(archs: Sequence[str], version: str = "3.4.0") -> TritonFacts:
    names = {triton_gpu_name(a): True for a in archs}
    tool = PtxasProbe(
        path="/venv/triton/backends/nvidia/bin/ptxas",
        role="ptxas",
        source="bundled with triton",
        version="12.8",
        accepts=names,
    )
    return TritonFacts(
        installed=True,
        version=version,
        location="/venv/triton",
        tools=(tool,),
        uses={a: "ptxas" for a in archs},
    )


class _FakeTorchGuard(Patch):
    name = "torch"
    summary = "route Jiterator-bound ops around NVRTC"
    distribution = "torch"
    supported = ">=2.6"
    modules = ("torch",)


class _FakeTorchaudio(Patch):
    name = "torchaudio"
    summary = "kaldi fbank without complex abs"
    distribution = "torchaudio"
    supported = ">=2.6,<2.12"
    modules = ("torchaudio.compliance.kaldi",)
    strategies = ("real", "cpu")


@dataclass
class FakePatch:
    """A patch the doctor is told about: judged by the real engine (``evaluate``) on the fake
    machine, with these installed versions; ``state`` stands for where it is in this process."""

    registration: Registration
    installed: dict[str, str | None] = field(default_factory=dict)
    state: str | None = None
    state_reason: str = ""

    def judge(self, platform: Platform) -> Evaluation:
        evaluation = evaluate(self.registration, platform=platform, versions=self.installed.get)
        if self.state is None:
            return evaluation
        return replace(evaluation, state=self.state, state_reason=self.state_reason)


def fake_patches(
    torch_version: str = "2.8.0", torchaudio_version: str | None = "2.8.0"
) -> list[FakePatch]:
    """Two patches shaped like the built-in ``torch`` and ``torchaudio`` ones."""
    installed = {"torch": torch_version, "torchaudio": torchaudio_version}
    return [
        FakePatch(
            Registration("torch", "fake:TorchGuard", "blackwell-compat", _FakeTorchGuard()),
            installed,
        ),
        FakePatch(
            Registration("torchaudio", "fake:Torchaudio", "blackwell-compat", _FakeTorchaudio()),
            installed,
        ),
    ]


def broken_patch(name: str, provider: str, error: str) -> FakePatch:
    """A registration whose entry point failed to load."""
    return FakePatch(Registration(name, "x:Y", provider, error=error))


def machine(
    gpus: Sequence[GPU] = (),
    *,
    nvrtc: NvrtcInfo | None = None,
    driver: DriverInfo | None = None,
    torch: TorchFacts | None = None,
    torchaudio: TorchaudioFacts | None = None,
    triton: TritonFacts | None = None,
    env: Mapping[str, str] | None = None,
    patches: list[FakePatch] | None = None,
    emulated_arch: str | None = None,
    **facts_changes: Any,
) -> Facts:
    torch_facts = torch if torch is not None else torch_cu128(gpus)
    audio = torchaudio if torchaudio is not None else audio_for(torch_facts)
    versions = {
        "torch": (torch_facts.version or "").split("+")[0] or None,
        "torchaudio": (audio.version or "").split("+")[0] or None if audio.installed else None,
    }
    platform = build_platform(
        gpus=gpus,
        driver=driver if driver is not None else (DRIVER if gpus else NO_DRIVER),
        nvrtc=nvrtc,
        versions=versions,
        torch_cuda=torch_facts.cuda,
        system=SYSTEM,
        emulated_arch=emulated_arch,
        emulation_source=f"BLACKWELL_COMPAT_EMULATE={emulated_arch}" if emulated_arch else None,
    )
    archs = [g.arch for g in platform.gpus] or ["sm_100", "sm_103", "sm_120", "sm_121"]
    return Facts(
        platform=platform,
        torch=torch_facts,
        torchaudio=audio,
        triton=triton if triton is not None else triton_accepting(archs),
        env=dict(env or {}),
        patches=[p.judge(platform) for p in (fake_patches() if patches is None else patches)],
        **facts_changes,
    )
