"""The NVRTC and Triton (torch.compile) checks."""

from __future__ import annotations

from typing import Any

from ...engine import GpuService, evaluate_all
from ...engine.rungs import FUSER_BY_REMEDY, services
from ...loader import same_file
from ...probing.ptxas import PTXAS_BLACKWELL_ENV, PTXAS_ENV, PtxasProbe, triton_gpu_name
from ...remedies.nvrtc import AVAILABLE, SERVED
from ...versions import installed_version
from ..facts import Facts
from ..hints import (
    BLACKWELL_ARCHS,
    NVRTC_CU12_PACKAGE,
    NVRTC_CU13_PACKAGE,
    Fix,
    arch_sort_key,
    cuda_major,
    nvrtc_fixes,
    nvrtc_remedy_fix,
    patch_route_fix,
    ptxas_fix,
    triton_upgrade_fix,
)
from ..model import FAIL, PASS, SKIP, WARN, CheckResult, result, worse
from .common import dedupe, label, short_list
from .frameworks import uncovered_archs


def _broken_nvrtc_fix(torch_cuda: str | None) -> Fix:
    """Reinstall the NVRTC wheel of torch's CUDA (a truncated or damaged file is the usual
    cause of a library that crashes when loaded)."""
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
    version = installed_version(package)
    pinned = f"{package}=={version}" if version else package  # the same version, intact
    return Fix(text, (f"pip install --force-reinstall --no-deps {pinned}",))


def _planned_ladder(facts: Facts) -> tuple[GpuService, ...]:
    """What ``apply()`` would do per GPU of these facts (the remedy's plan, the patches that
    would apply): which rung would serve fused TorchScript kernels, and why."""
    assert facts.remedy is not None
    evaluations = (
        facts.patches if facts.patches is not None else evaluate_all(platform=facts.platform)
    )
    serving = tuple(e.name for e in evaluations if e.would_apply and e.requires_affected)
    return services(facts.platform, facts.remedy, serving, planned=True, forced=False)


def check_nvrtc(facts: Facts) -> CheckResult:
    title = "NVRTC (run-time compiled kernels)"
    platform = facts.platform
    nvrtc = platform.nvrtc
    torch = facts.torch
    data: dict[str, Any] = {
        "nvrtc": nvrtc.as_dict(),
        "verdicts": [
            {"index": g.index, "arch": g.arch, "affected": g.affected, "reason": g.reason}
            for g in platform.gpus
        ],
    }
    if not torch.installed and platform.torch is None:
        return result("nvrtc", title, SKIP, "torch is not installed: nothing compiles", data=data)
    if torch.installed and not torch.error and not torch.cuda and not torch.hip:
        if not platform.emulated_arch:
            return result(
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
        details.append(f"compiles for: {short_list(archs)}")
    loaded = [p for p in torch.loaded_nvrtc if p]
    if nvrtc.path and loaded and not any(same_file(nvrtc.path, p) for p in loaded):
        details.append(f"but torch itself mapped: {', '.join(loaded)}")
        status = worse(status, WARN)
        summary += " (torch mapped another NVRTC; see details)"
    elif loaded:
        details.append("torch, imported in a child process, mapped this same library")
    gpus = platform.gpus
    for gpu in gpus:
        verdict = "Jiterator FAILS" if gpu.affected else "Jiterator compiles"
        details.append(f"{label(gpu)}: {verdict}")
    if not gpus and nvrtc.known:
        answers = [f"{a} {'yes' if nvrtc.supports(a) else 'no'}" for a in BLACKWELL_ARCHS]
        details.append("no GPU here; a Blackwell GPU would compile: " + ", ".join(answers))
    affected = [g for g in gpus if g.affected]
    if affected:
        status = FAIL
        data["emulated_only"] = all(g.emulated for g in affected)
        labels = ", ".join(label(g) for g in affected)
        if any(not g.emulated for g in affected):
            summary = f"AFFECTED: {labels}: NVRTC {nvrtc.version_string} cannot compile for it"
        else:
            # Say once, plainly, whose failure this is: the emulation's; and what this
            # machine's NVRTC would do for a real GPU of that arch (the verdict line says the
            # same, so the two never disagree).
            summary = f"AFFECTED (emulated): {labels} fails as an affected GPU would"
            verdicts = {nvrtc.supports(g.arch) for g in affected}
            shown = ", ".join(dict.fromkeys(g.arch for g in affected))
            if verdicts == {True}:
                summary += (
                    f"; this machine's NVRTC {nvrtc.version_string} lists {shown}, so a real "
                    "one would be fine"
                )
            elif verdicts == {False}:
                summary += (
                    f"; this machine's NVRTC {nvrtc.version_string} does not list {shown} "
                    "either, so a real one would fail the same way"
                )
        details.append(
            "ops that fail: complex abs/angle/exp/sqrt/log…, complex32 arithmetic, lgamma, "
            "digamma, erfinv, i0, prod, gcd… (see docs/inventory.md), and fused TorchScript "
            "kernels (elementwise chains of @torch.jit.script functions, compiled after their "
            "first calls)"
        )
        real_missing = sorted({g.arch for g in affected if not g.emulated}, key=arch_sort_key)
        emulated = [g for g in affected if g.emulated]
        remedy = facts.remedy
        available = None
        needed = {g.arch for g in affected}
        if remedy is not None:
            details.append(f"remedy ladder: {remedy.describe()}")
            if remedy.status in (AVAILABLE, SERVED) and needed <= remedy.archs:
                available = remedy.source()
            ladder = _planned_ladder(facts)
            data["ladder"] = [service.as_dict() for service in ladder]
            for service in ladder:
                # A remedy already serving (SERVED) is no plan: its GPUs read as affected there.
                line = FUSER_BY_REMEDY if available is not None else service.fuser
                if line and service.arch in needed:
                    details.append(f"fused TorchScript kernels on {service.gpu}: {line}")
        no_kernels = uncovered_archs(torch.arch_list, affected)
        if no_kernels:
            # Without kernels for the GPU every CUDA op fails, whatever NVRTC torch calls: the
            # PyTorch check's fix comes first, and NVRTC advice alone would mislead.
            fixes.append(
                Fix(
                    f"First fix PyTorch (above): its build has no kernels for "
                    f"{', '.join(no_kernels)}, so every CUDA op fails there whatever NVRTC it "
                    "loads; the CUDA 13.0 builds it names also bring an NVRTC that lists "
                    f"{', '.join(no_kernels)}, which settles this check too. With this torch "
                    "(e.g. to test under emulation), the ops it compiles at run time need the "
                    "NVRTC remedy:"
                )
            )
        if available is not None and remedy is not None:
            # `fetch nvrtc` (or a toolkit) already provides a capable library: the remedy will
            # serve every affected GPU, so the one step left is to run through it.
            served_now = remedy.status == SERVED
            status = PASS if served_now else WARN
            summary += (
                f"; served in this process by {available}"
                if served_now
                else f"; the NVRTC remedy will serve it with {available}"
            )
            if not served_now:
                fixes.append(nvrtc_remedy_fix(available))
            return result("nvrtc", title, status, summary, details, dedupe(fixes), data)
        if no_kernels:
            fixes.append(nvrtc_remedy_fix(None))
            return result("nvrtc", title, status, summary, details, dedupe(fixes), data)
        if real_missing:
            fixes.extend(
                nvrtc_fixes(
                    real_missing,
                    torch_version=torch.version or platform.torch,
                    torch_cuda=torch.cuda or platform.torch_cuda,
                    nvrtc_path=nvrtc.path,
                    nvrtc_version=nvrtc.version,
                    with_torchaudio=facts.torchaudio.installed,
                    remedy=available,
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
                # Under emulation too, the remedy's first step is `fetch nvrtc` (the emulated
                # GPU is served once a capable library is loaded), the patches the other way.
                fixes.append(nvrtc_remedy_fix(None))
                fixes.append(patch_route_fix(alternative=True))
    return result("nvrtc", title, status, summary, details, dedupe(fixes), data)


def _accepted(facts: Facts, release: str | None) -> bool | None:
    """Whether the installed Triton accepts a ptxas of *release* (asked of Triton itself by
    :func:`blackwell_compat.remedies.ptxas.triton_accepts_release`); ``None``: not asked."""
    if not release or release not in facts.ptxas_releases:
        return None
    return facts.ptxas_releases[release][0]


def _tool_line(tool: PtxasProbe) -> str:
    version = f" {tool.version}" if tool.version else ""
    return f"{tool.role}{version}: {tool.path} ({tool.source})"


def check_triton(facts: Facts) -> CheckResult:
    title = "Triton / torch.compile"
    triton = facts.triton
    platform = facts.platform
    data = triton.as_dict()
    if not triton.installed:
        return result(
            "triton",
            title,
            SKIP,
            "triton is not installed: torch.compile has no GPU backend (eager mode is fine)",
            data=data,
        )
    if triton.error:
        return result("triton", title, WARN, f"could not examine triton: {triton.error}", data=data)
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
            # The same gate the ptxas remedy uses: a ptxas that knows the GPU helps only if
            # this Triton accepts its release (Triton 3.2 refuses anything newer than 12.6).
            capable = [
                alt
                for alt in triton.alternatives
                if not alt.error and all(alt.accepts.get(n) for n in wanted)
            ]
            alternative = next(
                (alt.path for alt in capable if _accepted(facts, alt.version) is not False),
                None,
            )
            refused = [
                f"triton {triton.version or '?'}: {facts.ptxas_releases[release][1]}"
                for release in dict.fromkeys(
                    [a.version for a in capable if a.version] + [facts.ptxas_fetch_release or ""]
                )
                if release and _accepted(facts, release) is False
            ]
            details.extend(refused)
            if alternative is not None:
                fixes.append(ptxas_fix(env_var, alternative))
            elif _accepted(facts, facts.ptxas_fetch_release) is False:
                fixes.append(
                    triton_upgrade_fix(
                        triton.version,
                        facts.torch.version or platform.torch,
                        facts.torchaudio.installed,
                        facts.ptxas_fetch_release or "?",
                    )
                )
            else:
                fixes.append(ptxas_fix(env_var, None))
    elif rejected_any:
        summary += f" (its ptxas would reject {', '.join(n for n, _ in rejected_any)})"
    else:
        summary += ": its ptxas accepts " + ", ".join(
            triton_gpu_name(a) for a in dict.fromkeys(archs)
        )
    return result("triton", title, status, summary, details, fixes, data)
