"""The smoke check: the workloads run unpatched and patched (``doctor --smoke``)."""

from __future__ import annotations

from ...engine.reports import RUNG_NVRTC_REMEDY
from ...errors import NVRTC_ARCH_ERROR_MARK
from ..facts import Facts
from ..hints import patch_route_fix
from ..model import FAIL, PASS, SKIP, WARN, CheckResult, result, worse
from ..smoke import SmokeRun


def _run_line(run: SmokeRun) -> list[str]:
    head = f"{run.target.label}, {run.mode} ({run.seconds:.1f} s)"
    if run.mode == "patched" and run.applied:
        head += f", applied: {', '.join(run.applied)}"
    if run.rungs:
        head += f", served by: {', '.join(run.rungs)}"
    if run.jiterator_kernels is not None:
        head += f"; NVRTC kernels compiled: {run.jiterator_kernels}"
    lines = [head + ":"]
    if run.error:
        lines.append(f"  ERROR: {run.error}")
    # one line per outcome: workloads with the same status and error share it
    groups: dict[tuple[str, str], list[str]] = {}
    for outcome in run.results:
        groups.setdefault((outcome.status, outcome.error or ""), []).append(outcome.name)
    for (status, error), names in groups.items():
        lines.append(f"  {status.upper()} {', '.join(names)}" + (":" if error else ""))
        if error:
            lines.append(f"    {error}")
    return lines


def check_smoke(facts: Facts) -> CheckResult:
    title = "Smoke test"
    smoke = facts.smoke
    if smoke is None:
        return result("smoke", title, SKIP, "not run (use --smoke)")
    data = smoke.as_dict()
    if smoke.skipped:
        return result("smoke", title, SKIP, f"not run: {smoke.skipped}", data=data)
    details: list[str] = []
    status = PASS
    verdicts: list[str] = []
    for target in smoke.targets:
        runs = {r.mode: r for r in smoke.runs if r.target == target}
        plain = runs.get("unpatched")
        served = runs.get("remedy")
        patched = runs.get("patched") or served
        for run in (plain, patched):
            if run is not None:
                details.extend(_run_line(run))
        if plain is None or patched is None:
            continue
        patched_ok = patched.error is None and not patched.failures and bool(patched.ran)
        plain_ok = plain.error is None and not plain.failures
        if served is not None:
            # The NVRTC remedy is the step the doctor recommends: prove that one.
            by_remedy = bool(served.rungs) and all(r == RUNG_NVRTC_REMEDY for r in served.rungs)
            rungs = ", ".join(served.rungs) or "none reported"
            if not patched_ok:
                status = FAIL
                verdicts.append(f"{target.label}: workloads fail through the NVRTC remedy")
            elif not by_remedy:
                status = FAIL
                verdicts.append(
                    f"{target.label}: the NVRTC remedy did not serve (served by: {rungs})"
                )
            elif target.emulate and plain_ok:
                status = FAIL
                verdicts.append(f"{target.label}: emulation did not reproduce the NVRTC error")
            else:
                verdicts.append(
                    f"{target.label}: "
                    + ("failure reproduced, " if not plain_ok else "")
                    + "the NVRTC remedy serves it, results match the CPU"
                )
            continue
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
            status = worse(status, WARN)
            verdicts.append(f"{target.label}: fails unpatched, patched works")
        else:
            verdicts.append(f"{target.label}: works")
    fixes = [patch_route_fix()] if status == WARN else []
    return result(
        "smoke", title, status, "; ".join(verdicts) or "nothing ran", details, fixes, data
    )


def _is_nvrtc(text: str) -> bool:
    return NVRTC_ARCH_ERROR_MARK in text
