"""The doctor's checks: each turns :class:`~blackwell_compat.doctor.facts.Facts` into a result.

A check is a plain function ``(facts) -> CheckResult`` (:mod:`..model`); the runner
(:mod:`..runner`) calls them all and turns one that raises into a ``fail`` result carrying the
error, so the others still run.  Nothing here touches the machine: facts come from
:mod:`..facts` (or from a test).  One module per area.
"""

from __future__ import annotations

from ..model import Check
from ..pins import TITLE as PINS_TITLE
from ..pins import check_pins
from .compilers import check_nvrtc, check_triton
from .environment import check_environment
from .frameworks import arch_coverage, check_torch, check_torchaudio
from .hardware import check_driver, check_gpus, driver_missing
from .patches import check_patches
from .smoke import check_smoke

#: (id, title, function), in report order.
CHECKS: tuple[tuple[str, str, Check], ...] = (
    ("driver", "NVIDIA driver", check_driver),
    ("gpus", "GPUs", check_gpus),
    ("torch", "PyTorch", check_torch),
    ("nvrtc", "NVRTC (run-time compiled kernels)", check_nvrtc),
    ("torchaudio", "torchaudio", check_torchaudio),
    ("triton", "Triton / torch.compile", check_triton),
    ("patches", "Patches", check_patches),
    ("pins", PINS_TITLE, check_pins),
    ("environment", "Environment", check_environment),
    ("smoke", "Smoke test", check_smoke),
)

__all__ = [
    "CHECKS",
    "arch_coverage",
    "check_driver",
    "check_environment",
    "check_gpus",
    "check_nvrtc",
    "check_patches",
    "check_pins",
    "check_smoke",
    "check_torch",
    "check_torchaudio",
    "check_triton",
    "driver_missing",
]
