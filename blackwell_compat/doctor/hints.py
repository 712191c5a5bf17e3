"""The smallest install that fixes a stack at the root, as copy-paste commands.

Facts behind the tables (see docs/concepts.md and docs/doctor.md): the supported-arch lists of
the NVRTC wheels were read with ``nvrtcGetSupportedArchs``; PyTorch publishes CUDA 13.0 builds
(``cu130``) from torch 2.9 on.  Whether installing ``nvidia-cuda-nvrtc-cu12==12.9.86`` into a
CUDA 12.8 environment is enough was inferred (torch loads whichever ``libnvrtc.so.12`` the
``nvidia-cuda-nvrtc-cu12`` wheel provides), not tested on such a GPU; the docs say so.
"""

from __future__ import annotations

import itertools
import os
import re
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..config import AUTO as AUTO_VARIABLE
from ..config import arch_to_capability
from ..remedies.fuser import COST as FUSER_COST
from ..versions import release as release_of

#: The oldest NVRTC release whose supported-arch list includes the arch.
FIRST_NVRTC: dict[str, tuple[int, int]] = {
    "sm_100": (12, 8),
    "sm_101": (12, 8),
    "sm_120": (12, 8),
    "sm_103": (12, 9),
    "sm_121": (12, 9),
    "sm_110": (13, 0),
}

#: The newest NVRTC for CUDA 12 builds of torch, and what it lists (measured).
NVRTC_CU12 = "12.9.86"
NVRTC_CU12_PACKAGE = "nvidia-cuda-nvrtc-cu12"
NVRTC_CU13_PACKAGE = "nvidia-cuda-nvrtc"
NVCC_CU12_PACKAGE = "nvidia-cuda-nvcc-cu12"
#: First torch release with CUDA 13.0 wheels on download.pytorch.org.
FIRST_CU130_TORCH = (2, 9)
TORCH_INDEX = "https://download.pytorch.org/whl/{tag}"

#: Archs the doctor reports on when a machine has no GPU: the ones this library is about.
BLACKWELL_ARCHS: tuple[str, ...] = ("sm_100", "sm_103", "sm_120", "sm_121")


@dataclass(frozen=True)
class Fix:
    """One way out: what it does, in words, and the commands to paste."""

    text: str
    commands: tuple[str, ...] = ()


def cuda_major(cuda: str | None) -> int | None:
    if not cuda:
        return None
    head = cuda.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def cuda_tag(cuda: str | None) -> str | None:
    """``"12.8"`` -> ``"cu128"``."""
    if not cuda:
        return None
    parts = cuda.split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return f"cu{parts[0]}{parts[1]}"


def needed_nvrtc(archs: Iterable[str]) -> tuple[int, int] | None:
    """The oldest NVRTC that lists every arch in *archs*; ``None`` when one is unknown here."""
    needed = (0, 0)
    for arch in archs:
        first = FIRST_NVRTC.get(arch)
        if first is None:
            return None
        needed = max(needed, first)
    return needed


def _pip_path(path: str | None) -> bool:
    """Whether *path* lies in an NVIDIA pip wheel's layout (``nvidia/cuda_nvrtc/...``)."""
    if not path:
        return False
    parts = os.path.normpath(path).replace("\\", "/").split("/")
    for here, after in itertools.pairwise(parts):
        if here == "nvidia" and (after == "cuda_nvrtc" or re.fullmatch(r"cu\d+", after)):
            return True
    return False


def torch_cuda13_fix(torch_version: str | None, with_torchaudio: bool) -> Fix:
    """Reinstall torch (and torchaudio) as CUDA 13.0 builds."""
    release = release_of(torch_version)
    index = TORCH_INDEX.format(tag="cu130")
    if release is not None and release[:2] >= FIRST_CU130_TORCH:
        same = ".".join(str(p) for p in release[:3])
        pkgs = f"torch=={same}" + (f" torchaudio=={same}" if with_torchaudio else "")
        text = (
            f"Or switch to the CUDA 13.0 build of the same torch {same}: its NVRTC 13.0 lists "
            "sm_100, sm_103, sm_110, sm_120 and sm_121."
        )
        return Fix(text, (f"pip install --force-reinstall {pkgs} --index-url {index}",))
    pkgs = '"torch>=2.9"' + (" torchaudio" if with_torchaudio else "")
    text = (
        "Or upgrade to a torch built for CUDA 13.0 (torch 2.9 or newer): its NVRTC 13.0 lists "
        "sm_100, sm_103, sm_110, sm_120 and sm_121."
    )
    return Fix(text, (f"pip install --upgrade {pkgs} --index-url {index}",))


def patch_route_fix(alternative: bool = False) -> Fix:
    """Run with the patches; *alternative*: phrased as the last of several ways out."""
    lead = "Or keep this stack and let" if alternative else "Let"
    return Fix(
        f"{lead} blackwell-compat route PyTorch's run-time compiled ops around NVRTC (no "
        "reinstall; run your program through it, or call blackwell_compat.apply() before the "
        "model runs). What it costs TorchScript: the fuser rung turns GPU fusion off, so "
        f"{FUSER_COST}:",
        ("python -m blackwell_compat run -- python your_script.py",),
    )


def nvrtc_remedy_fix(available: str | None) -> Fix:
    """The cheapest way out: blackwell-compat loads a capable NVRTC for torch, nothing is
    installed or patched (docs/remedies.md).  *available*: the capable library the remedy found
    here, described; ``None``: none yet, so ``fetch nvrtc`` comes first."""
    run = "python -m blackwell_compat run -- python your_script.py"
    if available:
        return Fix(
            f"blackwell-compat found a capable NVRTC: {available}. Run your program through "
            f"it (or set {AUTO_VARIABLE}=1, or call blackwell_compat.apply() before the first "
            "CUDA use) and torch compiles with it, fused TorchScript kernels included: nothing "
            "installed, nothing patched:",
            (run,),
        )
    return Fix(
        "Let blackwell-compat give torch a capable NVRTC without changing your environment "
        "(it compiles fused TorchScript kernels too): fetch it into blackwell-compat's cache, "
        f"then run your program through it (or set {AUTO_VARIABLE}=1, or call "
        "blackwell_compat.apply() before the first CUDA use):",
        ("python -m blackwell_compat fetch nvrtc", run),
    )


def nvrtc_fixes(
    missing: Sequence[str],
    *,
    torch_version: str | None,
    torch_cuda: str | None,
    nvrtc_path: str | None,
    nvrtc_version: tuple[int, int] | None,
    with_torchaudio: bool,
    remedy: str | None = None,
) -> list[Fix]:
    """Fixes for GPUs whose archs (*missing*) the loaded NVRTC lacks, smallest first: the
    NVRTC remedy (*remedy*: the capable library it found, described), then reinstalls."""
    fixes: list[Fix] = [nvrtc_remedy_fix(remedy)]
    major = cuda_major(torch_cuda)
    needed = needed_nvrtc(missing)
    shown = ", ".join(missing)
    if major == 12:
        if needed is not None and needed <= (12, 9):
            torch_name = f"torch {torch_version}" if torch_version else "torch"
            pin = (
                f"; pip will report that {torch_name} requires another "
                f"{NVRTC_CU12_PACKAGE} version: that message is expected, the install still "
                "happens and torch loads the newer library"
            )
            if _pip_path(nvrtc_path) or nvrtc_path is None:
                text = (
                    f"Install NVRTC {NVRTC_CU12}, which lists {shown}, in place of the "
                    f"NVRTC {_v(nvrtc_version)} wheel torch uses{pin}."
                )
            else:
                text = (
                    f"torch loads NVRTC from a CUDA toolkit ({nvrtc_path}). Install the "
                    f"NVRTC {NVRTC_CU12} wheel (it lists {shown}) and run the doctor again "
                    "to check that torch picks it, or upgrade that toolkit to CUDA 12.9 or "
                    f"newer{pin}."
                )
            fixes.append(Fix(text, (f"pip install {NVRTC_CU12_PACKAGE}=={NVRTC_CU12}",)))
        elif needed is None:
            fixes.append(
                Fix(
                    f"No CUDA 12 NVRTC known to this blackwell-compat lists {shown}; the "
                    "newest CUDA build of torch is the way to try."
                )
            )
        fixes.append(torch_cuda13_fix(torch_version, with_torchaudio))
    elif major is not None and major >= 13:
        fixes.append(
            Fix(
                f"Upgrade the CUDA {major} NVRTC wheel to its newest release; if it still lacks "
                f"{shown}, this GPU needs a newer CUDA than torch was built for.",
                (f"pip install --upgrade {NVRTC_CU13_PACKAGE}",),
            )
        )
    else:
        fixes.append(torch_cuda13_fix(torch_version, with_torchaudio))
    fixes.append(patch_route_fix(alternative=True))
    return fixes


def torch_arch_fix(torch_version: str | None, with_torchaudio: bool) -> Fix:
    """Fix for a torch whose compiled kernels do not cover a GPU."""
    fix = torch_cuda13_fix(torch_version, with_torchaudio)
    return Fix(
        "Install a torch build compiled for this GPU: the CUDA 13.0 builds carry sm_100 and "
        "sm_120 kernels (sm_120 kernels run on sm_121 too).",
        fix.commands,
    )


def torchaudio_fix(torch_version: str | None, torch_cuda: str | None) -> Fix:
    """Reinstall torchaudio as the build that matches the installed torch."""
    release = release_of(torch_version)
    tag = cuda_tag(torch_cuda) or "cpu"
    index = TORCH_INDEX.format(tag=tag)
    if release is None:
        return Fix(
            "Install the torchaudio build that matches torch (same version, same CUDA build).",
            (f"pip install --force-reinstall --no-deps torchaudio --index-url {index}",),
        )
    same = ".".join(str(p) for p in release[:3])
    return Fix(
        f"Install the torchaudio {same} build for {tag}, which matches torch {torch_version}.",
        (f"pip install --force-reinstall --no-deps torchaudio=={same} --index-url {index}",),
    )


def triton_upgrade_fix(
    triton_version: str | None,
    torch_version: str | None,
    with_torchaudio: bool,
    needed_release: str,
) -> Fix:
    """Triton itself is too old: it refuses every ptxas that knows the GPU (Triton 3.2 takes
    ptxas up to 12.6; Blackwell's ``sm_XYa`` names need 12.9 or newer), so no variable and no
    ``fetch ptxas`` helps.  Triton comes with torch, so the way out is a newer torch."""
    commands = torch_cuda13_fix(torch_version, with_torchaudio).commands
    return Fix(
        f"Upgrade Triton: triton {triton_version or '?'} refuses ptxas {needed_release}, the "
        "first release that knows this GPU, so neither TRITON_PTXAS_PATH nor `fetch ptxas` "
        "can help torch.compile here (eager mode is not affected). Triton comes with torch, "
        "which pins the Triton it was built with: upgrade torch; its CUDA 13.0 builds bring a "
        "Triton that accepts a CUDA 13 ptxas:",
        commands,
    )


def ptxas_wheel_path() -> str:
    """Where ``pip install nvidia-cuda-nvcc-cu12`` puts ``ptxas`` for this interpreter."""
    purelib = sysconfig.get_paths().get("purelib") or "site-packages"
    exe = ".exe" if os.name == "nt" else ""
    return os.path.join(purelib, "nvidia", "cuda_nvcc", "bin", "ptxas" + exe)


def ptxas_fix(env_var: str, alternative: str | None) -> Fix:
    """Point Triton at a ``ptxas`` that knows the GPU."""
    setter = "set" if os.name == "nt" else "export"
    if alternative is not None:
        return Fix(
            f"Point Triton at a ptxas on this machine that accepts the GPU ({env_var}):",
            (f"{setter} {env_var}={alternative}",),
        )
    return Fix(
        f"Fetch a CUDA 12.9+ ptxas (it accepts sm_100a through sm_121a) into blackwell-compat's "
        f"cache, nothing is installed; apply(), `run` and BLACKWELL_COMPAT_AUTO=1 then set "
        f"{env_var} to it:",
        ("python -m blackwell_compat fetch ptxas",),
    )


def _v(version: tuple[int, int] | None) -> str:
    return "?" if version is None else f"{version[0]}.{version[1]}"


def arch_sort_key(arch: str) -> tuple[int, int]:
    try:
        return arch_to_capability(arch)
    except ValueError:
        return (0, 0)
