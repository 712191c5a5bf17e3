"""The doctor's checks: each turns :class:`~blackwell_compat.doctor.facts.Facts` into a result.

A check is a plain function ``(facts) -> CheckResult``; :func:`run_checks` calls them all and
turns one that raises into a ``fail`` result carrying the error, so the others still run.
Nothing here touches the machine: facts come from :mod:`.facts` (or from a test).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .hints import (
    BLACKWELL_ARCHS,
    Fix,
    arch_sort_key,
    nvrtc_fixes,
    patch_route_fix,
    ptxas_fix,
    torch_arch_fix,
    torchaudio_fix,
)
from .pins import check_pins

if TYPE_CHECKING:
    from ..probing import GPU, Platform
    from .facts import Facts
    from .ptxas import PtxasProbe
    from .smoke import SmokeRun

PASS = "pass"
WARN = "warn"
FAIL = "fail"
SKIP = "skip"
STATUSES = (PASS, WARN, FAIL, SKIP)
_SEVERITY = {SKIP: 0, PASS: 1, WARN: 2, FAIL: 3}

EXIT_OK = 0
EXIT_FAIL = 1

SCHEMA_ID = "blackwell-compat-doctor/1"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check, as data (rendered by :mod:`.render`)."""

    id: str
    title: str
    status: str
    summary: str
    details: tuple[str, ...] = ()
    hint: str | None = None
    commands: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.id!r}: status {self.status!r} is not one of {STATUSES}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "summary": self.summary,
            "details": list(self.details),
            "hint": self.hint,
            "commands": list(self.commands),
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class Report:
    """Every check's result plus the platform facts."""

    checks: tuple[CheckResult, ...]
    platform: Mapping[str, Any]
    facts: Mapping[str, Any]
    version: str

    @property
    def status(self) -> str:
        worst = max((c.status for c in self.checks), key=_SEVERITY.__getitem__, default=PASS)
        return PASS if worst == SKIP else worst

    @property
    def exit_code(self) -> int:
        return EXIT_FAIL if any(c.status == FAIL for c in self.checks) else EXIT_OK

    @property
    def affected(self) -> bool:
        return bool(self.platform.get("affected"))

    def check(self, check_id: str) -> CheckResult:
        for result in self.checks:
            if result.id == check_id:
                return result
        raise KeyError(check_id)

    def as_dict(self) -> dict[str, Any]:
        counts = {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}
        return {
            "schema": SCHEMA_ID,
            "blackwell_compat": self.version,
            "status": self.status,
            "exit_code": self.exit_code,
            "affected": self.affected,
            "reasons": list(self.platform.get("reasons") or ()),
            "counts": counts,
            "checks": [c.as_dict() for c in self.checks],
            "platform": dict(self.platform),
            "facts": dict(self.facts),
        }


def _fixes(fixes: Sequence[Fix]) -> tuple[str | None, tuple[str, ...]]:
    """Join fixes into one hint and the list of commands (in order)."""
    if not fixes:
        return None, ()
    parts = []
    for fix in fixes:
        parts.append(fix.text)
        parts.extend(f"  $ {command}" for command in fix.commands)
    commands = tuple(c for fix in fixes for c in fix.commands)
    return "\n".join(parts), commands


def _result(
    check_id: str,
    title: str,
    status: str,
    summary: str,
    details: Iterable[str] = (),
    fixes: Sequence[Fix] = (),
    data: Mapping[str, Any] | None = None,
) -> CheckResult:
    hint, commands = _fixes(fixes)
    return CheckResult(
        id=check_id,
        title=title,
        status=status,
        summary=summary,
        details=tuple(details),
        hint=hint,
        commands=commands,
        data=dict(data or {}),
    )


def _label(gpu: GPU) -> str:
    """``sm_121 (NVIDIA GB10)``, or ``emulated sm_121`` for the emulated GPU."""
    return f"emulated {gpu.arch}" if gpu.emulated else f"{gpu.arch} ({gpu.name})"


def _gpu_line(gpu: GPU) -> str:
    if gpu.emulated:
        return f"emulated {gpu.arch} (CPU tensors play its part)"
    cap = f"{gpu.capability[0]}.{gpu.capability[1]}" if gpu.capability else "?"
    extra = f", PCI {gpu.pci_bus_id}" if gpu.pci_bus_id else ""
    return f"GPU {gpu.index}: {gpu.name}, compute capability {cap}, {gpu.arch}{extra}"


def _short_list(items: Sequence[str], limit: int = 12) -> str:
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:3]) + ", …, " + ", ".join(items[-(limit - 4) :])


# -- driver ---------------------------------------------------------------------------------

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
        return _result("driver", title, FAIL, facts.probe_error, data=data)
    if not driver.available:
        if driver_missing(platform):
            return _result(
                "driver",
                title,
                SKIP,
                "no NVIDIA driver on this machine (nothing to diagnose on a GPU)",
                details=[driver.error or ""],
                data=data,
            )
        return _result(
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
        from .hints import cuda_major

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
    return _result("driver", title, status, summary, details, fixes, data)


# -- GPUs -----------------------------------------------------------------------------------


def check_gpus(facts: Facts) -> CheckResult:
    title = "GPUs"
    platform = facts.platform
    gpus = platform.gpus
    data = {"gpus": [g.as_dict() for g in gpus]}
    visible = platform.system.cuda_visible_devices
    details = [_gpu_line(g) for g in gpus]
    if visible is not None:
        details.append(f"CUDA_VISIBLE_DEVICES={visible!r} (torch numbers only those, in order)")
    if not gpus:
        why = "the driver lists none" if platform.driver.available else "no NVIDIA driver"
        return _result("gpus", title, SKIP, f"no NVIDIA GPU ({why})", details, data=data)
    names = ", ".join(f"{g.name} ({g.arch})" if not g.emulated else g.name for g in gpus)
    count = len(platform.real_gpus)
    summary = f"{count} GPU{'s' if count != 1 else ''}: {names}"
    if count == 0:
        summary = f"no real GPU; {names}"
    return _result("gpus", title, PASS, summary, details, data=data)


# -- torch ----------------------------------------------------------------------------------


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


def check_torch(facts: Facts) -> CheckResult:
    title = "PyTorch"
    torch = facts.torch
    platform = facts.platform
    data = torch.as_dict()
    with_audio = facts.torchaudio.installed
    if not torch.installed:
        return _result("torch", title, SKIP, "torch is not installed", data=data)
    if torch.error:
        return _result(
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
        return _result(
            "torch", title, SKIP, summary + " (ROCm: not what this library is about)", data=data
        )
    if not torch.cuda:
        if real:
            return _result(
                "torch",
                title,
                WARN,
                summary + ": it cannot use the GPU",
                fixes=[torch_arch_fix(torch.version, with_audio)],
                data=data,
            )
        return _result("torch", title, PASS, summary, data=data)
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
        who = _label(gpu)
        if kind == "sass":
            how = "its own SASS" if by == gpu.arch else f"{by} SASS (binary compatible)"
            details.append(f"{who}: precompiled kernels run via {how}")
        elif kind == "ptx":
            details.append(
                f"{who}: precompiled kernels run via {by} PTX, JIT-compiled by the driver"
            )
        else:
            details.append(
                f'{who}: no compiled kernel covers it: every CUDA op fails with "no kernel '
                'image is available for execution on the device"'
            )
            uncovered.append(gpu.arch)
            status = FAIL if not gpu.emulated else max(status, WARN, key=_SEVERITY.__getitem__)
    if real and not torch.arch_list:
        status = max(status, WARN, key=_SEVERITY.__getitem__)
    if uncovered:
        summary += f": its kernels do not cover {', '.join(uncovered)}"
        fixes.append(torch_arch_fix(torch.version, with_audio))
    return _result("torch", title, status, summary, details, fixes, data)


# -- NVRTC ----------------------------------------------------------------------------------


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _broken_nvrtc_fix(torch_cuda: str | None) -> Fix:
    """Reinstall the NVRTC wheel of torch's CUDA (a truncated or damaged file is the usual
    cause of a library that crashes when loaded)."""
    from .hints import NVRTC_CU12_PACKAGE, NVRTC_CU13_PACKAGE, cuda_major

    major = cuda_major(torch_cuda) if torch_cuda else None
    text = (
        "Reinstall the package that put this library there (a truncated download or a damaged "
        "file is the usual cause); for NVIDIA's pip wheels:"
    )
    package = (
        NVRTC_CU12_PACKAGE if major == 12 else NVRTC_CU13_PACKAGE if (major or 0) >= 13 else None
    )
    if package is None:
        return Fix(text.rstrip(":") + ".")
    from ..versions import installed_version

    version = installed_version(package)
    pinned = f"{package}=={version}" if version else package  # the same version, intact
    return Fix(text, (f"pip install --force-reinstall --no-deps {pinned}",))


def check_nvrtc(facts: Facts) -> CheckResult:
    title = "NVRTC (run-time compiled kernels)"
    platform = facts.platform
    nvrtc = platform.nvrtc
    torch = facts.torch
    data = {
        "nvrtc": nvrtc.as_dict(),
        "verdicts": [
            {"index": g.index, "arch": g.arch, "affected": g.affected, "reason": g.reason}
            for g in platform.gpus
        ],
    }
    if not torch.installed and platform.torch is None:
        return _result("nvrtc", title, SKIP, "torch is not installed: nothing compiles", data=data)
    if torch.installed and not torch.error and not torch.cuda and not torch.hip:
        if not platform.emulated_arch:
            return _result(
                "nvrtc", title, SKIP, "torch is a CPU-only build: it never loads NVRTC", data=data
            )
    details: list[str] = []
    fixes: list[Fix] = []
    status = PASS
    if nvrtc.crash is not None:
        # It crashed, hung or ended its test process: torch's Jiterator would do the same.
        summary = f"the NVRTC torch loads is broken: {nvrtc.error or nvrtc.crash}"
        details.append(f"search: {nvrtc.source}" if nvrtc.source else "search: -")
        status = FAIL
        fixes.append(_broken_nvrtc_fix(torch.cuda or platform.torch_cuda))
    elif nvrtc.path is None or not nvrtc.known:
        what = nvrtc.error or nvrtc.describe()
        summary = f"cannot tell which archs the NVRTC torch loads supports: {what}"
        details.append(f"search: {nvrtc.source}" if nvrtc.source else "search: -")
        status = WARN if platform.real_gpus else PASS
        if platform.emulated_arch:
            status = FAIL
    else:
        summary = f"NVRTC {nvrtc.version_string} at {nvrtc.path}"
        if nvrtc.source:
            details.append(f"found: {nvrtc.source}")
        archs = sorted(nvrtc.supported_archs, key=arch_sort_key)
        details.append(f"compiles for: {_short_list(archs)}")
    loaded = [p for p in torch.loaded_nvrtc if p]
    if nvrtc.path and loaded and not any(_same_file(nvrtc.path, p) for p in loaded):
        details.append(f"but torch itself mapped: {', '.join(loaded)}")
        status = max(status, WARN, key=_SEVERITY.__getitem__)
        summary += " (torch mapped another NVRTC; see details)"
    elif loaded:
        details.append("torch, imported in a child process, mapped this same library")
    gpus = platform.gpus
    for gpu in gpus:
        verdict = "Jiterator FAILS" if gpu.affected else "Jiterator compiles"
        details.append(f"{_label(gpu)}: {verdict}")
    if not gpus and nvrtc.known:
        answers = [f"{a} {'yes' if nvrtc.supports(a) else 'no'}" for a in BLACKWELL_ARCHS]
        details.append("no GPU here; a Blackwell GPU would compile: " + ", ".join(answers))
    affected = [g for g in gpus if g.affected]
    if affected:
        status = FAIL
        labels = ", ".join(_label(g) for g in affected)
        if any(not g.emulated for g in affected):
            summary = f"AFFECTED: {labels}: NVRTC {nvrtc.version_string} cannot compile for it"
        else:
            # Say once, plainly, that the failure shown is the emulation's, not this machine's.
            summary = (
                f"AFFECTED (emulated): {labels} fails as an affected GPU would; this "
                "machine's NVRTC is not the cause"
            )
        details.append(
            "ops that fail: complex abs/angle/exp/sqrt/log…, complex32 arithmetic, lgamma, "
            "digamma, erfinv, i0, prod, gcd… (see docs/inventory.md)"
        )
        real_missing = sorted({g.arch for g in affected if not g.emulated}, key=arch_sort_key)
        emulated = [g for g in affected if g.emulated]
        if real_missing:
            fixes.extend(
                nvrtc_fixes(
                    real_missing,
                    torch_version=torch.version or platform.torch,
                    torch_cuda=torch.cuda or platform.torch_cuda,
                    nvrtc_path=nvrtc.path,
                    nvrtc_version=nvrtc.version,
                    with_torchaudio=facts.torchaudio.installed,
                )
            )
        for gpu in emulated:
            real_verdict = nvrtc.supports(gpu.arch)
            if real_verdict is True:
                what = (
                    f"A real {gpu.arch} GPU would be fine with this stack: "
                    f"NVRTC {nvrtc.version_string} lists {gpu.arch}."
                )
                fixes.append(Fix(f"Emulation only. {what}"))
            elif real_verdict is False and not real_missing:
                fixes.append(Fix(f"Emulation only; a real {gpu.arch} GPU would fail here too:"))
                fixes.extend(
                    nvrtc_fixes(
                        [gpu.arch],
                        torch_version=torch.version or platform.torch,
                        torch_cuda=torch.cuda or platform.torch_cuda,
                        nvrtc_path=nvrtc.path,
                        nvrtc_version=nvrtc.version,
                        with_torchaudio=facts.torchaudio.installed,
                    )
                )
            if not real_missing and (real_verdict is not False or not fixes):
                fixes.append(patch_route_fix())
    return _result("nvrtc", title, status, summary, details, _dedupe(fixes), data)


def _dedupe(fixes: Sequence[Fix]) -> list[Fix]:
    seen: set[tuple[str, tuple[str, ...]]] = set()
    result = []
    for fix in fixes:
        key = (fix.text, fix.commands)
        if key not in seen:
            seen.add(key)
            result.append(fix)
    return result


# -- torchaudio -----------------------------------------------------------------------------


def _minor(version: str | None) -> tuple[int, ...] | None:
    from .hints import _release

    release = _release(version)
    return release[:2] if release else None


def check_torchaudio(facts: Facts) -> CheckResult:
    title = "torchaudio"
    audio = facts.torchaudio
    torch = facts.torch
    platform = facts.platform
    data = audio.as_dict()
    if not audio.installed:
        return _result("torchaudio", title, SKIP, "torchaudio is not installed", data=data)
    version = audio.version or platform.torchaudio or "?"
    fix = torchaudio_fix(torch.version, torch.cuda)
    if not audio.tried:
        return _result(
            "torchaudio",
            title,
            WARN,
            f"torchaudio {version} was not checked: the torch probe did not get that far",
            details=[audio.error or "the child process stopped before loading torchaudio"],
            data=data,
        )
    if audio.error or audio.native_loaded is False:
        return _result(
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
    if platform.affected:
        details.append(
            "on the affected GPU: kaldi.fbank/spectrogram/mfcc and functional.spectrogram "
            "(Spectrogram, MelSpectrogram) call complex abs: the 'torchaudio' patch reroutes "
            "them"
        )
    return _result("torchaudio", title, status, summary, details, fixes, data)


# -- Triton / torch.compile ------------------------------------------------------------------


def _tool_line(tool: PtxasProbe) -> str:
    version = f" {tool.version}" if tool.version else ""
    return f"{tool.role}{version}: {tool.path} ({tool.source})"


def check_triton(facts: Facts) -> CheckResult:
    title = "Triton / torch.compile"
    from .ptxas import PTXAS_BLACKWELL_ENV, PTXAS_ENV, triton_gpu_name

    triton = facts.triton
    platform = facts.platform
    data = triton.as_dict()
    if not triton.installed:
        return _result(
            "triton",
            title,
            SKIP,
            "triton is not installed: torch.compile has no GPU backend (eager mode is fine)",
            data=data,
        )
    if triton.error:
        return _result(
            "triton", title, WARN, f"could not examine triton: {triton.error}", data=data
        )
    summary = f"triton {triton.version or '?'}"
    details = [_tool_line(t) for t in triton.tools]
    fixes: list[Fix] = []
    status = PASS
    gpus = platform.gpus
    archs = [g.arch for g in gpus] or list(BLACKWELL_ARCHS)
    rejected_real: list[str] = []
    rejected_any: list[tuple[str, str]] = []  # (gpu name, role)
    answers: list[str] = []
    for arch in dict.fromkeys(archs):
        role = triton.uses.get(arch, "ptxas")
        tool = triton.tool(role)
        name = triton_gpu_name(arch)
        is_real = any(g.arch == arch and not g.emulated for g in gpus)
        if tool is None:
            details.append(f"{arch}: no {role} examined")
            continue
        if tool.error:
            details.append(f"{arch}: {role} does not run: {tool.error}")
            accepted = False
        else:
            accepted = bool(tool.accepts.get(name))
            if gpus:
                why = "" if accepted else f": {tool.errors.get(name, 'rejected')}"
                verdict = "accepts" if accepted else "REJECTS"
                details.append(f"{arch}: {role} {verdict} {name}{why}")
            else:
                answers.append(f"{name} {'yes' if accepted else 'no'}")
        if not accepted:
            rejected_any.append((name, role))
            if is_real:
                rejected_real.append(arch)
    if answers:
        details.append("no GPU here; its ptxas would accept: " + ", ".join(answers))
    if rejected_any and gpus:
        status = FAIL if rejected_real else WARN
        names = ", ".join(n for n, _ in rejected_any)
        summary += f": its ptxas rejects {names}; torch.compile fails on that GPU"
        for role in dict.fromkeys(r for _, r in rejected_any):
            env_var = PTXAS_BLACKWELL_ENV if role == "ptxas-blackwell" else PTXAS_ENV
            wanted = [n for n, r in rejected_any if r == role]
            alternative = next(
                (
                    alt.path
                    for alt in triton.alternatives
                    if not alt.error and all(alt.accepts.get(n) for n in wanted)
                ),
                None,
            )
            fixes.append(ptxas_fix(env_var, alternative))
    elif rejected_any:
        summary += f" (its ptxas would reject {', '.join(n for n, _ in rejected_any)})"
    else:
        summary += ": its ptxas accepts " + ", ".join(
            triton_gpu_name(a) for a in dict.fromkeys(archs)
        )
    return _result("triton", title, status, summary, details, fixes, data)


# -- patches --------------------------------------------------------------------------------


def _row_would_apply(row: Mapping[str, Any], platform: Platform) -> tuple[bool, str]:
    """Whether a ``list`` row's patch would apply on *platform* (recomputed from its facts)."""
    from ..versions import in_range

    if not row.get("loaded"):
        return False, str(row.get("error") or "could not be loaded")
    distribution = row.get("distribution")
    installed = row.get("installed")
    supported = row.get("supported") or ""
    if supported == "any":
        supported = ""
    if distribution:
        if installed is None:
            return False, f"{distribution} is not installed"
        if not in_range(str(installed), str(supported)):
            return False, f"{distribution} {installed} is outside {supported}"
    if row.get("requires_affected", True) and not platform.affected:
        return False, "no affected GPU here"
    return True, "affected GPU present" if row.get("requires_affected", True) else "always"


def check_patches(facts: Facts) -> CheckResult:
    title = "Patches"
    platform = facts.platform
    rows: Sequence[Mapping[str, Any]]
    if facts.patches is None:
        from ..cli.list_cmd import rows as list_rows

        rows = list_rows()
    else:
        rows = facts.patches
    entries = []
    details: list[str] = []
    status = PASS
    fixes: list[Fix] = []
    would: list[str] = []
    applied: list[str] = []
    outside: list[str] = []
    for row in rows:
        name = str(row.get("name"))
        ok, why = _row_would_apply(row, platform)
        state = str(row.get("state") or "unknown")
        if not row.get("loaded"):
            status = FAIL
            details.append(f"{name}: FAILED TO LOAD: {row.get('error')}")
            entries.append({"name": name, "would_apply": False, "why": why, "state": "failed"})
            continue
        distribution = row.get("distribution")
        installed = row.get("installed")
        supported = row.get("supported") or "any"
        if distribution:
            target = f"{distribution} {installed or 'not installed'} (supports {supported})"
        else:
            target = ", ".join(row.get("modules") or ()) or "-"
        if distribution and installed is None:
            line = f"{name}: {target}"  # not installed: nothing more to say
        else:
            line = f"{name}: {target}: " + ("would apply" if ok else f"would not apply ({why})")
        if state not in ("not-applied", "skipped"):
            line += f"; in this process: {state}"
        details.append(line)
        if state in ("failed", "drift"):
            status = FAIL
            details.append(f"  {row.get('state_reason')}")
        if ok:
            would.append(name)
        if state in ("applied", "pending-import"):
            applied.append(name)
        if distribution and installed is not None and "outside" in why:
            outside.append(f"{distribution} {installed}")
        entries.append(
            {
                "name": name,
                "target": distribution,
                "installed": installed,
                "supported": supported,
                "would_apply": ok,
                "why": why,
                "state": state,
            }
        )
    summary = (
        f"{len(rows)} known; would apply here: {', '.join(would) or 'none'}; "
        f"applied in this process: {', '.join(applied) or 'none'}"
    )
    if outside and platform.affected:
        status = max(status, WARN, key=_SEVERITY.__getitem__)
        details.append(
            f"not covered (installed version outside the patch's range): {', '.join(outside)}"
        )
    if platform.affected and would and not applied:
        fixes.append(patch_route_fix())
    return _result("patches", title, status, summary, details, fixes, {"patches": entries})


# -- environment ----------------------------------------------------------------------------

_RELATED = (
    "TRITON_PTXAS_PATH",
    "TRITON_PTXAS_BLACKWELL_PATH",
    "PYTORCH_KERNEL_CACHE_PATH",
    "USE_PYTORCH_KERNEL_CACHE",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUDA_HOME",
    "CUDA_PATH",
)


def _known_patches(facts: Facts) -> dict[str, tuple[str, ...]]:
    """Patch name -> its strategies."""
    if facts.patches is not None:
        return {str(r.get("name")): tuple(r.get("strategies") or ()) for r in facts.patches}
    from ..engine import registrations

    return {
        r.name: (tuple(r.patch.strategies) if r.patch is not None else ()) for r in registrations()
    }


def check_environment(facts: Facts) -> CheckResult:
    from .. import config
    from ..errors import ConfigError

    title = "Environment"
    env = facts.env
    details: list[str] = []
    problems: list[str] = []
    values: dict[str, Any] = {}
    status = PASS
    known: dict[str, tuple[str, ...]] | None = None
    for name in config.ALL_VARIABLES:
        raw = env.get(name)
        if raw is None:
            continue
        values[name] = raw
        try:
            if name == config.DISABLE:
                names = config.parse_name_list(raw, source=name)
                if names and "all" not in names:
                    known = known if known is not None else _known_patches(facts)
                    config.check_known(names, known, source=name)
                meaning = f"disables {', '.join(names) or 'nothing'}"
            elif name == config.EMULATE:
                arch = config.emulated_arch_from_env(env)
                meaning = f"emulates {arch} on CPU tensors" if arch else "emulation off"
            elif name == config.STRATEGY:
                wanted = config.strategies_from_env(env)
                known = known if known is not None else _known_patches(facts)
                config.check_known(wanted, known, source=name)
                for patch, strategy in wanted.items():
                    if strategy not in known[patch]:
                        offered = ", ".join(known[patch]) or "none"
                        raise ConfigError(
                            f"{name}: patch {patch!r} has no strategy {strategy!r}; "
                            f"its strategies: {offered}"
                        )
                meaning = ", ".join(f"{p} uses {s}" for p, s in wanted.items()) or "nothing"
            elif name == config.NVRTC:  # issue 12
                path = config.nvrtc_from_env(env)
                meaning = f"the NVRTC remedy tries {path} first" if path else "NVRTC remedy off"
            else:
                flag = config.parse_bool(name, env)
                meaning = "on" if flag else "off"
        except (ConfigError, ValueError) as exc:
            problems.append(str(exc))
            details.append(f"{name}={raw!r}: INVALID: {exc}")
            continue
        details.append(f"{name}={raw!r}: {meaning}")
    related = {name: env[name] for name in _RELATED if name in env}
    for name, value in related.items():
        details.append(f"{name}={value!r}")
    emulated = facts.platform.emulated_arch
    if problems:
        status = FAIL
        summary = f"{len(problems)} malformed variable(s): {problems[0]}"
        fixes = [Fix("Fix or unset the variable(s); the accepted forms are in the message.")]
    else:
        fixes = []
        set_names = [n for n in config.ALL_VARIABLES if n in values]
        summary = (
            f"in effect: {', '.join(set_names)}"
            if set_names
            else "no BLACKWELL_COMPAT_* variable set"
        )
    if emulated and not problems:
        status = WARN
        summary = f"emulation active ({emulated}): CPU tensors fail as on that GPU; " + summary
        fixes.append(Fix(f"Unset {config.EMULATE} to stop emulating."))
    return _result(
        "environment",
        title,
        status,
        summary,
        details,
        fixes,
        {"variables": values, "related": related, "emulated_arch": emulated},
    )


# -- smoke ----------------------------------------------------------------------------------


def _run_line(run: SmokeRun) -> list[str]:
    head = f"{run.target.label}, {run.mode} ({run.seconds:.1f} s)"
    if run.mode == "patched" and run.applied:
        head += f", applied: {', '.join(run.applied)}"
    if run.jiterator_kernels is not None:
        head += f"; NVRTC kernels compiled: {run.jiterator_kernels}"
    lines = [head + ":"]
    if run.error:
        lines.append(f"  ERROR: {run.error}")
    # one line per outcome: workloads with the same status and error share it
    groups: dict[tuple[str, str], list[str]] = {}
    for result in run.results:
        groups.setdefault((result.status, result.error or ""), []).append(result.name)
    for (status, error), names in groups.items():
        lines.append(f"  {status.upper()} {', '.join(names)}" + (":" if error else ""))
        if error:
            lines.append(f"    {error}")
    return lines


def check_smoke(facts: Facts) -> CheckResult:
    title = "Smoke test"
    smoke = facts.smoke
    if smoke is None:
        return _result("smoke", title, SKIP, "not run (use --smoke)")
    data = smoke.as_dict()
    if smoke.skipped:
        return _result("smoke", title, SKIP, f"not run: {smoke.skipped}", data=data)
    details: list[str] = []
    status = PASS
    verdicts: list[str] = []
    for target in smoke.targets:
        runs = {r.mode: r for r in smoke.runs if r.target == target}
        plain, patched = runs.get("unpatched"), runs.get("patched")
        for run in (plain, patched):
            if run is not None:
                details.extend(_run_line(run))
        if plain is None or patched is None:
            continue
        patched_ok = patched.error is None and not patched.failures and bool(patched.ran)
        plain_ok = plain.error is None and not plain.failures
        if target.emulate:
            nvrtc_failures = [r for r in plain.failures if r.error and _is_nvrtc(r.error)]
            reproduced = bool(nvrtc_failures) and len(nvrtc_failures) == len(plain.ran)
            if not patched_ok:
                status = FAIL
                verdicts.append(f"{target.label}: patched workloads fail")
            elif not reproduced:
                status = FAIL
                verdicts.append(f"{target.label}: emulation did not reproduce the NVRTC error")
            else:
                verdicts.append(f"{target.label}: failure reproduced, patches fix it")
        elif not patched_ok:
            status = FAIL
            verdicts.append(f"{target.label}: fails even patched")
        elif not plain_ok:
            status = max(status, WARN, key=_SEVERITY.__getitem__)
            verdicts.append(f"{target.label}: fails unpatched, patched works")
        else:
            verdicts.append(f"{target.label}: works")
    fixes = [patch_route_fix()] if status == WARN else []
    return _result(
        "smoke", title, status, "; ".join(verdicts) or "nothing ran", details, fixes, data
    )


def _is_nvrtc(text: str) -> bool:
    return "invalid value for --gpu-architecture" in text


# -- running --------------------------------------------------------------------------------

Check = Callable[["Facts"], CheckResult]

#: (id, title, function), in report order.
CHECKS: tuple[tuple[str, str, Check], ...] = (
    ("driver", "NVIDIA driver", check_driver),
    ("gpus", "GPUs", check_gpus),
    ("torch", "PyTorch", check_torch),
    ("nvrtc", "NVRTC (run-time compiled kernels)", check_nvrtc),
    ("torchaudio", "torchaudio", check_torchaudio),
    ("triton", "Triton / torch.compile", check_triton),
    ("patches", "Patches", check_patches),
    ("pins", "Speech-stack pins", check_pins),
    ("environment", "Environment", check_environment),
    ("smoke", "Smoke test", check_smoke),
)


def run_checks(
    facts: Facts, checks: Sequence[tuple[str, str, Check]] = CHECKS
) -> tuple[CheckResult, ...]:
    """Run every check; one that raises becomes a ``fail`` result with its error."""
    results = []
    for check_id, title, func in checks:
        try:
            result = func(facts)
        except Exception as exc:
            frames = traceback.extract_tb(exc.__traceback__)
            where = frames[-1] if frames else None
            location = f" at {os.path.basename(where.filename)}:{where.lineno}" if where else ""
            result = CheckResult(
                id=check_id,
                title=title,
                status=FAIL,
                summary=f"the check itself failed: {type(exc).__name__}: {exc}",
                details=(f"raised{location}",),
                hint="This is a bug in the doctor; please report it with this output.",
            )
        results.append(result)
    return tuple(results)


def build_report(facts: Facts, checks: Sequence[tuple[str, str, Check]] = CHECKS) -> Report:
    """Run the checks on *facts* and bundle everything the renderers need."""
    from .. import __version__

    results = run_checks(facts, checks)
    return Report(
        checks=results,
        platform=facts.platform.as_dict(),
        facts=facts.as_dict(),
        version=__version__,
    )
