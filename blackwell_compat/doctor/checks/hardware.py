"""The driver and GPU checks."""

from __future__ import annotations

from ...probing import Platform
from ..facts import Facts
from ..hints import Fix, cuda_major
from ..model import FAIL, PASS, SKIP, WARN, CheckResult, result
from .common import gpu_line

_MISSING_MARKS = (
    "no such file",
    "cannot open shared object",
    "does not exist",
    "could not find module",
    "not found",
)


def driver_missing(platform: Platform) -> bool:
    """No NVIDIA driver at all (as opposed to one that is installed but broken)."""
    driver = platform.driver
    if driver.available:
        return False
    text = (driver.error or "").lower()
    return any(mark in text for mark in _MISSING_MARKS)


def check_driver(facts: Facts) -> CheckResult:
    title = "NVIDIA driver"
    platform = facts.platform
    driver = platform.driver
    data = driver.as_dict()
    if facts.probe_error:
        return result("driver", title, FAIL, facts.probe_error, data=data)
    if not driver.available:
        if driver_missing(platform):
            return result(
                "driver",
                title,
                SKIP,
                "no NVIDIA driver on this machine (nothing to diagnose on a GPU)",
                details=[driver.error or ""],
                data=data,
            )
        return result(
            "driver",
            title,
            FAIL,
            "the NVIDIA driver's NVML library is there but does not work",
            details=[driver.error or "unknown NVML error", f"library: {driver.library}"],
            fixes=[
                Fix(
                    "Check that `nvidia-smi` lists the GPUs; a driver updated without a "
                    "reboot, or a container started without the GPU runtime, gives this. "
                    "Reboot or reinstall the NVIDIA driver.",
                    ("nvidia-smi",),
                )
            ],
            data=data,
        )
    cuda = driver.cuda_driver_string or "?"
    summary = f"driver {driver.driver_version or '?'}, supports CUDA {cuda}"
    details = [f"NVML: {driver.library}", *driver.notes]
    status = PASS
    fixes: list[Fix] = []
    torch_cuda = facts.torch.cuda or platform.torch_cuda
    if torch_cuda and driver.cuda_driver_version is not None:
        major = cuda_major(torch_cuda)
        minor_text = torch_cuda.split(".")[1] if "." in torch_cuda else "0"
        wanted = (major or 0, int(minor_text) if minor_text.isdigit() else 0)
        have = driver.cuda_driver_version
        if wanted[0] > have[0]:
            status = FAIL
            details.append(
                f"torch is built for CUDA {torch_cuda}, newer than the CUDA {cuda} this driver "
                "supports: torch cannot use the GPU"
            )
            fixes.append(
                Fix(
                    f"Update the NVIDIA driver to one that supports CUDA {wanted[0]}.x, or "
                    f"install a torch build for CUDA {have[0]}.x."
                )
            )
        elif wanted > have:
            status = WARN
            details.append(
                f"torch is built for CUDA {torch_cuda}, newer than the driver's CUDA {cuda}: "
                "it runs through CUDA minor-version compatibility, but PTX JIT of newer code "
                "fails"
            )
            fixes.append(Fix(f"Update the NVIDIA driver to one that supports CUDA {torch_cuda}."))
    if driver.notes and status == PASS:
        status = WARN
    return result("driver", title, status, summary, details, fixes, data)


# -- GPUs -----------------------------------------------------------------------------------


def check_gpus(facts: Facts) -> CheckResult:
    title = "GPUs"
    platform = facts.platform
    gpus = platform.gpus
    data = {"gpus": [g.as_dict() for g in gpus]}
    visible = platform.system.cuda_visible_devices
    details = [gpu_line(g) for g in gpus]
    if visible is not None:
        details.append(f"CUDA_VISIBLE_DEVICES={visible!r} (torch numbers only those, in order)")
    if not gpus:
        why = "the driver lists none" if platform.driver.available else "no NVIDIA driver"
        return result("gpus", title, SKIP, f"no NVIDIA GPU ({why})", details, data=data)
    names = ", ".join(f"{g.name} ({g.arch})" if not g.emulated else g.name for g in gpus)
    count = len(platform.real_gpus)
    summary = f"{count} GPU{'s' if count != 1 else ''}: {names}"
    if count == 0:
        summary = f"no real GPU; {names}"
    return result("gpus", title, PASS, summary, details, data=data)
