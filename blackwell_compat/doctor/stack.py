"""What torch and torchaudio say about themselves, as plain data.

The doctor asks them in a child process (:mod:`.stack_child`, read by
:func:`blackwell_compat.doctor.facts.probe_stack`); the checks, the smoke targets and the
renderers read these types.  A module of its own, below both :mod:`.facts` and :mod:`.smoke`,
so that neither imports the other for a type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import capability_to_arch

__all__ = ["TorchDevice", "TorchFacts", "TorchaudioFacts"]


@dataclass(frozen=True)
class TorchDevice:
    """A CUDA device as torch numbers it."""

    index: int
    name: str
    capability: tuple[int, int]

    @property
    def arch(self) -> str:
        return capability_to_arch(*self.capability)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "capability": list(self.capability),
            "arch": self.arch,
        }


@dataclass(frozen=True)
class TorchFacts:
    """What torch says about itself (read in a child process)."""

    installed: bool
    version: str | None = None
    cuda: str | None = None
    hip: str | None = None
    arch_list: tuple[str, ...] = ()
    arch_list_source: str = ""
    cuda_available: bool | None = None
    devices: tuple[TorchDevice, ...] = ()
    loaded_nvrtc: tuple[str, ...] = ()
    cuda_error: str | None = None
    error: str | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TorchFacts:
        devices = tuple(
            TorchDevice(
                index=int(d["index"]),
                name=str(d["name"]),
                capability=(int(d["capability"][0]), int(d["capability"][1])),
            )
            for d in record.get("devices") or ()
        )
        cuda_error = record.get("cuda_error") or record.get("arch_list_error")
        return cls(
            installed=bool(record.get("installed")),
            version=record.get("version"),
            cuda=record.get("cuda"),
            hip=record.get("hip"),
            arch_list=tuple(str(a) for a in record.get("arch_list") or ()),
            arch_list_source=str(record.get("arch_list_source") or ""),
            cuda_available=record.get("cuda_available"),
            devices=devices,
            loaded_nvrtc=tuple(str(p) for p in record.get("loaded_nvrtc") or ()),
            cuda_error=cuda_error,
            error=record.get("error"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "installed": self.installed,
            "version": self.version,
            "cuda": self.cuda,
            "hip": self.hip,
            "arch_list": list(self.arch_list),
            "arch_list_source": self.arch_list_source,
            "cuda_available": self.cuda_available,
            "devices": [d.as_dict() for d in self.devices],
            "loaded_nvrtc": list(self.loaded_nvrtc),
            "cuda_error": self.cuda_error,
            "error": self.error,
        }


@dataclass(frozen=True)
class TorchaudioFacts:
    """What torchaudio says about itself (read in the same child, after torch)."""

    installed: bool
    version: str | None = None
    native_loaded: bool | None = None
    cuda_version: str | None = None
    cpu_only: bool | None = None
    error: str | None = None
    tried: bool = True
    """False when the child died before it got to torchaudio (nothing is known about it)."""
    cuda_version_error: str | None = None
    """The native library loaded, but its CUDA version could not be read (not a load error)."""

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TorchaudioFacts:
        return cls(
            installed=bool(record.get("installed")),
            version=record.get("version"),
            native_loaded=record.get("native_loaded"),
            cuda_version=record.get("cuda_version"),
            cpu_only=record.get("cpu_only"),
            error=record.get("error"),
            cuda_version_error=record.get("cuda_version_error"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "installed": self.installed,
            "version": self.version,
            "native_loaded": self.native_loaded,
            "cuda_version": self.cuda_version,
            "cpu_only": self.cpu_only,
            "error": self.error,
            "tried": self.tried,
            "cuda_version_error": self.cuda_version_error,
        }
