"""The torch and torchaudio checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...versions import release as release_of
from ..facts import Facts
from ..hints import Fix, arch_sort_key, torch_arch_fix, torchaudio_fix
from ..model import FAIL, PASS, SKIP, WARN, CheckResult, result, worse
from .common import label

if TYPE_CHECKING:
    from ...probing import GPU


def arch_coverage(arch: str, arch_list: Sequence[str]) -> tuple[str, str | None]:
    """How torch's compiled kernels reach a device of *arch*.

    Returns ``("sass", "sm_120")`` for cubins that run on it (the same arch, or an older minor
    of the same major: cubins are binary compatible within a major), ``("ptx", "compute_90")``
    for PTX the driver can JIT, or ``("none", None)``: "no kernel image is available".
    """
    major, minor = arch_sort_key(arch)
    best_sass: tuple[int, int, str] | None = None
    best_ptx: tuple[int, int, str] | None = None
    for entry in arch_list:
        kind, _, digits = entry.partition("_")
        suffix = ""
        while digits and not digits[-1].isdigit():
            suffix = digits[-1] + suffix
            digits = digits[:-1]
        if len(digits) < 2 or not digits.isdigit():
            continue
        e_major, e_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm":
            if "a" in suffix:
                ok = (e_major, e_minor) == (major, minor)  # arch-specific cubins: exact only
            else:
                ok = e_major == major and e_minor <= minor
            if ok and (best_sass is None or (e_major, e_minor) > best_sass[:2]):
                best_sass = (e_major, e_minor, entry)
        elif kind == "compute" and (e_major, e_minor) <= (major, minor) and "a" not in suffix:
            if best_ptx is None or (e_major, e_minor) > best_ptx[:2]:
                best_ptx = (e_major, e_minor, entry)
    if best_sass is not None:
        return "sass", best_sass[2]
    if best_ptx is not None:
        return "ptx", best_ptx[2]
    return "none", None


def uncovered_archs(arch_list: Sequence[str], gpus: Sequence[GPU]) -> list[str]:
    """The archs of *gpus* no kernel of torch's build covers (nothing is known without a
    list): every CUDA op fails there with "no kernel image is available"."""
    if not arch_list:
        return []
    found = [g.arch for g in gpus if arch_coverage(g.arch, arch_list)[0] == "none"]
    return list(dict.fromkeys(found))


def check_torch(facts: Facts) -> CheckResult:
    title = "PyTorch"
    torch = facts.torch
    platform = facts.platform
    data = torch.as_dict()
    with_audio = facts.torchaudio.installed
    if not torch.installed:
        return result("torch", title, SKIP, "torch is not installed", data=data)
    if torch.error:
        return result(
            "torch",
            title,
            FAIL,
            f"torch {torch.version or ''} could not be examined".replace("  ", " "),
            details=[torch.error],
            fixes=[Fix("See the full error with:", ('python -c "import torch"',))],
            data=data,
        )
    build = f"CUDA {torch.cuda}" if torch.cuda else ("ROCm " + torch.hip if torch.hip else "CPU")
    summary = f"torch {torch.version}, built for {build}"
    details: list[str] = []
    fixes: list[Fix] = []
    status = PASS
    real = platform.real_gpus
    if torch.hip:
        return result(
            "torch", title, SKIP, summary + " (ROCm: not what this library is about)", data=data
        )
    if not torch.cuda:
        if real:
            return result(
                "torch",
                title,
                WARN,
                summary + ": it cannot use the GPU",
                fixes=[torch_arch_fix(torch.version, with_audio)],
                data=data,
            )
        return result("torch", title, PASS, summary, data=data)
    if torch.arch_list:
        where = f" ({torch.arch_list_source})" if torch.arch_list_source else ""
        details.append(f"compiled for: {', '.join(torch.arch_list)}{where}")
    else:
        details.append(
            "compiled arch list: unknown" + (f" ({torch.cuda_error})" if torch.cuda_error else "")
        )
    if torch.cuda_available is not None:
        available = "yes" if torch.cuda_available else "no"
        if torch.cuda_available:
            available += f", {len(torch.devices)} device(s)"
        elif torch.cuda_error:
            available += f" ({torch.cuda_error})"
        details.append(f"CUDA available to torch: {available}")
    if real and torch.cuda_available is False:
        status = FAIL
        summary += ": it cannot use the GPU"
        fixes.append(
            Fix(
                "torch sees no CUDA device although the driver lists one; check that the "
                "driver supports torch's CUDA version (see the driver check) and that "
                "CUDA_VISIBLE_DEVICES does not hide the GPUs."
            )
        )
    uncovered: list[str] = []
    for gpu in platform.gpus:
        if not torch.arch_list:
            break
        kind, by = arch_coverage(gpu.arch, torch.arch_list)
        who = label(gpu)
        if kind == "sass":
            how = "its own SASS" if by == gpu.arch else f"{by} SASS (binary compatible)"
            details.append(f"{who}: precompiled kernels run via {how}")
        elif kind == "ptx":
            details.append(
                f"{who}: precompiled kernels run via {by} PTX, JIT-compiled by the driver"
            )
        else:
            where = f"on a real {gpu.arch} GPU" if gpu.emulated else "on it"
            details.append(
                f'{who}: no compiled kernel covers it: every CUDA op fails {where} with "no '
                'kernel image is available for execution on the device", whatever NVRTC '
                "torch loads"
            )
            uncovered.append(gpu.arch)
            # The first failure to fix, emulated or not: an emulated GPU shows what a real one
            # of that arch meets with this build (issue 22).
            status = FAIL
    if real and not torch.arch_list:
        status = worse(status, WARN)
    if uncovered:
        summary += f": its kernels do not cover {', '.join(dict.fromkeys(uncovered))}"
        fixes.append(torch_arch_fix(torch.version, with_audio))
        data["emulated_only"] = not any(
            not g.emulated for g in platform.gpus if g.arch in uncovered
        ) and not (real and torch.cuda_available is False)
    return result("torch", title, status, summary, details, fixes, data)


def _minor(version: str | None) -> tuple[int, ...] | None:
    release = release_of(version)
    return release[:2] if release else None


def check_torchaudio(facts: Facts) -> CheckResult:
    title = "torchaudio"
    audio = facts.torchaudio
    torch = facts.torch
    platform = facts.platform
    data = audio.as_dict()
    if not audio.installed:
        return result("torchaudio", title, SKIP, "torchaudio is not installed", data=data)
    version = audio.version or platform.torchaudio or "?"
    fix = torchaudio_fix(torch.version, torch.cuda)
    if not audio.tried:
        return result(
            "torchaudio",
            title,
            WARN,
            f"torchaudio {version} was not checked: the torch probe did not get that far",
            details=[audio.error or "the child process stopped before loading torchaudio"],
            data=data,
        )
    if audio.error or audio.native_loaded is False:
        return result(
            "torchaudio",
            title,
            FAIL,
            f"torchaudio {version} does not load with torch {torch.version or '?'}",
            details=[audio.error or "its native library is not available"],
            fixes=[fix],
            data=data,
        )
    details: list[str] = []
    status = PASS
    fixes: list[Fix] = []
    summary = f"torchaudio {version}, native library loads with torch {torch.version or '?'}"
    ta_minor, t_minor = _minor(version), _minor(torch.version)
    if ta_minor and t_minor and ta_minor != t_minor:
        status = WARN
        details.append(
            f"torchaudio {'.'.join(map(str, ta_minor))} is made for torch "
            f"{'.'.join(map(str, ta_minor))}, not {'.'.join(map(str, t_minor))}"
        )
        fixes.append(fix)
    if audio.cpu_only and torch.cuda:
        status = WARN
        summary += " (CPU-only build)"
        machine = platform.system.machine.lower()
        where = (
            " (common on aarch64 machines such as DGX Spark when torchaudio comes from a "
            "different index than torch)"
            if machine in ("aarch64", "arm64")
            else ""
        )
        details.append(
            f"torchaudio is a CPU-only build next to a CUDA torch{where}: the ops of its "
            "own native library have no CUDA kernels; ops written on top of torch "
            "(spectrogram, kaldi fbank, the transforms) still run on the GPU"
        )
        if fix not in fixes:
            fixes.append(fix)
    elif audio.cuda_version:
        details.append(f"built for CUDA {audio.cuda_version}")
    elif audio.cuda_version_error:
        # Loaded fine; only the version question failed (an API this doctor does not know).
        details.append(f"CUDA build: not read ({audio.cuda_version_error})")
    if platform.affected:
        details.append(
            "on the affected GPU: kaldi.fbank/spectrogram/mfcc and functional.spectrogram "
            "(Spectrogram, MelSpectrogram) call complex abs: the 'torchaudio' patch reroutes "
            "them"
        )
    return result("torchaudio", title, status, summary, details, fixes, data)
