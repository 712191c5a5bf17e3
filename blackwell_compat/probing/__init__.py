"""``bc.probe()``: the GPUs, the NVRTC torch would load, and whether they get along.

Facts are read without importing torch and without creating a CUDA context: GPUs and driver
through NVML (ctypes), NVRTC through its own C API (ctypes) after finding the file torch would
load, versions from package metadata.  :func:`build_platform` turns facts into verdicts and is
pure, so fake platforms are built from plain data::

    from blackwell_compat.probing import GPU, build_platform, read_nvrtc

    nvrtc = read_nvrtc("/path/to/libnvrtc.so.12")
    platform = build_platform(gpus=[GPU(0, "NVIDIA GB10", capability=(12, 1))], nvrtc=nvrtc)
    platform.affected, platform.reasons
"""

from __future__ import annotations

from .isolation import read_nvml, read_nvrtc
from .locate import TorchBuild, find_nvrtc, find_nvrtc_candidates, locate_torch
from .nvml import GPU, DriverInfo
from .nvrtc import JITERATOR_SASS_SINCE, NvrtcCandidate, NvrtcInfo
from .platform import (
    LIBRARIES,
    Platform,
    SystemInfo,
    build_platform,
    current_system,
    forget,
    judge,
    probe,
    read_versions,
    retest,
)

__all__ = [
    "GPU",
    "JITERATOR_SASS_SINCE",
    "LIBRARIES",
    "DriverInfo",
    "NvrtcCandidate",
    "NvrtcInfo",
    "Platform",
    "SystemInfo",
    "TorchBuild",
    "build_platform",
    "current_system",
    "find_nvrtc",
    "find_nvrtc_candidates",
    "forget",
    "judge",
    "locate_torch",
    "probe",
    "read_nvml",
    "read_nvrtc",
    "read_versions",
    "retest",
]
