"""The NVIDIA GPUs of this machine, read through NVML with ctypes.

NVML is the driver's management library (``libnvidia-ml.so.1`` on Linux, x86_64 and aarch64
alike; ``nvml.dll`` on Windows).  Asking it for names and compute capabilities creates no CUDA
context and needs neither torch nor the CUDA runtime, so the probe is safe to run before torch is
imported and cheap on a machine without a GPU (one failed ``dlopen``).

:func:`~.isolation.read_nvml` never raises: a missing driver, an unloadable library or a failing
call gives a :class:`DriverInfo` whose ``error`` says so.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import MAX_MAJOR, MIN_MAJOR, arch_to_capability, capability_to_arch, parse_arch
from ..loader import loaded_path

#: Told each native step before it is taken (``"calling nvmlInit_v2"``): the test child of
#: :mod:`.isolation` passes one, so a crash or a hang is reported with the call that caused it.
Trace = Callable[[str], None]


def _no_trace(what: str) -> None:
    """The default :data:`Trace`: nobody listens."""


def valid_capability(major: int, minor: int) -> bool:
    """Whether ``major.minor`` is a compute capability the package can name (the range
    :func:`blackwell_compat.config.parse_arch` accepts, ``sm_30`` .. ``sm_199``)."""
    return MIN_MAJOR <= major <= MAX_MAJOR and 0 <= minor <= 9


NVML_SUCCESS = 0
MAX_GPUS = 64
"""The most GPUs the probe reads: an NVML reporting more is lying, and is reported as such."""
_NAME_BUFFER = 96  # NVML_DEVICE_NAME_V2_BUFFER_SIZE
_UUID_BUFFER = 96  # NVML_DEVICE_UUID_V2_BUFFER_SIZE
_VERSION_BUFFER = 80  # NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE


@dataclass(frozen=True)
class GPU:
    """One NVIDIA GPU (or the emulated one).

    ``index`` is NVML's index (PCI bus order).  It matches torch's numbering only with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` and no ``CUDA_VISIBLE_DEVICES`` remapping; the emulated GPU
    has index -1 because it is no CUDA device (CPU tensors play its part).

    Give ``arch`` or ``capability`` (or both, consistent); the other is derived.  ``affected``
    and ``reason`` are the verdict, filled in by :func:`blackwell_compat.probing.build_platform`.
    """

    index: int
    name: str
    arch: str = ""
    capability: tuple[int, int] | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    emulated: bool = False
    affected: bool = False
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.arch and self.capability is None:
            raise ValueError(f"GPU {self.index} ({self.name}): give arch or capability")
        if self.capability is not None:
            major, minor = self.capability
            if not valid_capability(int(major), int(minor)):
                raise ValueError(
                    f"GPU {self.index} ({self.name}): {major}.{minor} is no CUDA compute "
                    f"capability (major {MIN_MAJOR}-{MAX_MAJOR}, minor 0-9)"
                )
            derived = capability_to_arch(int(major), int(minor))
            if self.arch and parse_arch(self.arch, source=f"GPU {self.index} arch") != derived:
                raise ValueError(
                    f"GPU {self.index} ({self.name}): arch {self.arch!r} does not match "
                    f"compute capability {major}.{minor}"
                )
            object.__setattr__(self, "arch", derived)
            object.__setattr__(self, "capability", (int(major), int(minor)))
        else:
            arch = parse_arch(self.arch, source=f"GPU {self.index} arch")
            object.__setattr__(self, "arch", arch)
            object.__setattr__(self, "capability", arch_to_capability(arch))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GPU:
        """The inverse of :meth:`as_dict` (facts a test process reported)."""
        capability = data.get("capability")
        return cls(
            index=int(data["index"]),
            name=str(data["name"]),
            arch="" if capability else str(data.get("arch") or ""),
            capability=(int(capability[0]), int(capability[1])) if capability else None,
            uuid=data.get("uuid"),
            pci_bus_id=data.get("pci_bus_id"),
        )

    def label(self) -> str:
        """``"sm_121 (NVIDIA GB10)"``."""
        return f"{self.arch} ({self.name})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "arch": self.arch,
            "capability": list(self.capability) if self.capability else None,
            "uuid": self.uuid,
            "pci_bus_id": self.pci_bus_id,
            "emulated": self.emulated,
            "affected": self.affected,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class DriverInfo:
    """What NVML says about the driver, or why it could not be asked."""

    available: bool
    library: str | None = None
    """The NVML library that was loaded (or tried last)."""
    driver_version: str | None = None
    cuda_driver_version: tuple[int, int] | None = None
    """The newest CUDA version the driver supports (``nvmlSystemGetCudaDriverVersion``)."""
    error: str | None = None
    notes: tuple[str, ...] = field(default=())
    """Problems with single GPUs or optional facts that did not stop the probe."""
    crash: str | None = None
    """What happened when a test process loaded and called NVML (a crash, a signal, a hang),
    when it did not survive; NVML is then never loaded into this process."""

    @property
    def cuda_driver_string(self) -> str | None:
        if self.cuda_driver_version is None:
            return None
        return f"{self.cuda_driver_version[0]}.{self.cuda_driver_version[1]}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "library": self.library,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_string,
            "error": self.error,
            "notes": list(self.notes),
            "crash": self.crash,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriverInfo:
        """The inverse of :meth:`as_dict` (facts a test process reported)."""
        cuda = data.get("cuda_driver_version")
        version: tuple[int, int] | None = None
        if isinstance(cuda, str) and "." in cuda:
            head, _, tail = cuda.partition(".")
            version = (int(head), int(tail))
        return cls(
            available=bool(data.get("available")),
            library=data.get("library"),
            driver_version=data.get("driver_version"),
            cuda_driver_version=version,
            error=data.get("error"),
            notes=tuple(str(n) for n in data.get("notes") or ()),
            crash=data.get("crash"),
        )


class _PciInfo(ctypes.Structure):
    # nvmlPciInfo_t (v3); trailing room in case a newer driver writes a longer struct.
    _fields_ = (
        ("busIdLegacy", ctypes.c_char * 16),
        ("domain", ctypes.c_uint),
        ("bus", ctypes.c_uint),
        ("device", ctypes.c_uint),
        ("pciDeviceId", ctypes.c_uint),
        ("pciSubSystemId", ctypes.c_uint),
        ("busId", ctypes.c_char * 32),
        ("_room", ctypes.c_char * 64),
    )


def default_library_names(system: str | None = None) -> tuple[str, ...]:
    """Where NVML is looked for when no path is given."""
    if (system or sys.platform) == "win32":
        names = ["nvml.dll"]
        windir = os.environ.get("SystemRoot") or os.environ.get("WINDIR")
        if windir:
            names.append(os.path.join(windir, "System32", "nvml.dll"))
        program_files = os.environ.get("ProgramFiles", r"C:\Program Files")
        names.append(os.path.join(program_files, "NVIDIA Corporation", "NVSMI", "nvml.dll"))
        return tuple(names)
    return ("libnvidia-ml.so.1",)


class _Nvml:
    """Thin typed wrapper over the loaded NVML library."""

    def __init__(self, lib: Any, trace: Trace = _no_trace) -> None:
        self.trace = trace
        self.lib = lib

    def error(self, code: int) -> str:
        try:
            func = self.lib.nvmlErrorString
            func.restype = ctypes.c_char_p
            func.argtypes = [ctypes.c_int]
            text = func(code)
            if text:
                return f"{text.decode(errors='replace')} ({code})"
        except Exception:
            pass
        return f"NVML error {code}"

    def function(self, *names: str) -> tuple[Any, str]:
        """The first of *names* the library exports (newer ``_v2`` entry points first)."""
        for name in names:
            func = getattr(self.lib, name, None)
            if func is not None:
                func.restype = ctypes.c_int
                return func, name
        raise AttributeError(f"NVML has none of {', '.join(names)}")

    def call(self, names: tuple[str, ...], *args: Any) -> None:
        func, name = self.function(*names)
        self.trace(f"calling {name}")
        code = func(*args)
        if code != NVML_SUCCESS:
            raise _NvmlCallError(names[0], self.error(code))

    def text(self, names: tuple[str, ...], size: int, *prefix: Any) -> str:
        buffer = ctypes.create_string_buffer(size)
        self.call(names, *prefix, buffer, ctypes.c_uint(size))
        return buffer.value.decode(errors="replace")


class _NvmlCallError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")


def _load(
    path: str | os.PathLike[str] | None, trace: Trace = _no_trace
) -> tuple[Any, str, str | None]:
    """Load NVML; return ``(lib or None, file loaded or name tried last, error)``."""
    names = (os.fspath(path),) if path is not None else default_library_names()
    errors: list[str] = []
    for name in names:
        if os.sep in name and not os.path.exists(name):
            errors.append(f"{name} does not exist")
            continue
        try:
            trace(f"loading {name}")
            lib = ctypes.CDLL(name)
            resolved = loaded_path(lib._handle) or name
            trace(f"loaded {resolved}")
            return lib, resolved, None
        except OSError as exc:
            text = str(exc)
            errors.append(text if name in text else f"{name}: {text}")
    return None, names[-1], "; ".join(errors)


def _read_device(nvml: _Nvml, index: int, notes: list[str]) -> GPU | None:
    handle = ctypes.c_void_p()
    try:
        nvml.call(
            ("nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"),
            ctypes.c_uint(index),
            ctypes.byref(handle),
        )
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        nvml.call(
            ("nvmlDeviceGetCudaComputeCapability",),
            handle,
            ctypes.byref(major),
            ctypes.byref(minor),
        )
    except (AttributeError, _NvmlCallError) as exc:
        notes.append(f"GPU {index} skipped: {exc}")
        return None
    if not valid_capability(major.value, minor.value):
        notes.append(
            f"GPU {index} skipped: NVML reported compute capability {major.value}.{minor.value}, "
            f"which no GPU has (major {MIN_MAJOR}-{MAX_MAJOR}, minor 0-9)"
        )
        return None
    try:
        name = nvml.text(("nvmlDeviceGetName",), _NAME_BUFFER, handle)
    except (AttributeError, _NvmlCallError) as exc:
        notes.append(f"GPU {index}: no name ({exc})")
        name = "unknown NVIDIA GPU"
    uuid: str | None
    try:
        uuid = nvml.text(("nvmlDeviceGetUUID",), _UUID_BUFFER, handle) or None
    except (AttributeError, _NvmlCallError) as exc:
        notes.append(f"GPU {index}: no UUID ({exc})")
        uuid = None
    pci_bus_id: str | None
    try:
        info = _PciInfo()
        nvml.call(
            ("nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2"),
            handle,
            ctypes.byref(info),
        )
        pci_bus_id = info.busId.decode(errors="replace") or None
    except (AttributeError, _NvmlCallError) as exc:
        notes.append(f"GPU {index}: no PCI bus id ({exc})")
        pci_bus_id = None
    return GPU(
        index=index,
        name=name,
        capability=(major.value, minor.value),
        uuid=uuid,
        pci_bus_id=pci_bus_id,
    )


def _read(nvml: _Nvml, library: str) -> tuple[DriverInfo, tuple[GPU, ...]]:
    notes: list[str] = []
    driver_version: str | None = None
    try:
        driver_version = nvml.text(("nvmlSystemGetDriverVersion",), _VERSION_BUFFER) or None
    except (AttributeError, _NvmlCallError) as exc:
        notes.append(f"driver version unknown ({exc})")
    cuda_version: tuple[int, int] | None = None
    try:
        raw = ctypes.c_int(0)
        nvml.call(
            ("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"),
            ctypes.byref(raw),
        )
        cuda_version = (raw.value // 1000, (raw.value % 1000) // 10)
    except (AttributeError, _NvmlCallError) as exc:
        notes.append(f"CUDA driver version unknown ({exc})")
    count = ctypes.c_uint(0)
    try:
        nvml.call(("nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"), ctypes.byref(count))
    except (AttributeError, _NvmlCallError) as exc:
        return (
            DriverInfo(
                available=False,
                library=library,
                driver_version=driver_version,
                cuda_driver_version=cuda_version,
                error=f"NVML could not count the GPUs: {exc}",
                notes=tuple(notes),
            ),
            (),
        )
    gpus = []
    listed = count.value
    if listed > MAX_GPUS:
        notes.append(
            f"NVML reported {listed} GPUs, more than any machine has; only the first "
            f"{MAX_GPUS} were read"
        )
        listed = MAX_GPUS
    for index in range(listed):
        gpu = _read_device(nvml, index, notes)
        if gpu is not None:
            gpus.append(gpu)
    return (
        DriverInfo(
            available=True,
            library=library,
            driver_version=driver_version,
            cuda_driver_version=cuda_version,
            notes=tuple(notes),
        ),
        tuple(gpus),
    )


def read_nvml_here(
    path: str | os.PathLike[str] | None = None, *, trace: Trace = _no_trace
) -> tuple[DriverInfo, tuple[GPU, ...]]:
    """:func:`~blackwell_compat.probing.isolation.read_nvml` in this very process, with no test
    process first (the test child and libraries that already survived one use it).  *trace*
    is told each native step before it is taken."""
    lib, library, load_error = _load(path, trace)
    if lib is None:
        return (
            DriverInfo(
                available=False,
                library=library,
                error=f"no NVIDIA driver: NVML could not be loaded ({load_error})",
            ),
            (),
        )
    nvml = _Nvml(lib, trace)
    try:
        nvml.call(("nvmlInit_v2", "nvmlInit"))
    except (AttributeError, _NvmlCallError) as exc:
        return (
            DriverInfo(
                available=False,
                library=library,
                error=f"the NVIDIA driver did not initialise (NVML {exc})",
            ),
            (),
        )
    try:
        return _read(nvml, library)
    except Exception as exc:  # pragma: no cover - defensive: a driver misbehaving oddly
        return (
            DriverInfo(available=False, library=library, error=f"reading NVML failed: {exc!r}"),
            (),
        )
    finally:
        try:
            nvml.call(("nvmlShutdown",))
        except Exception:
            pass
