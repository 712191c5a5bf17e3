"""The patches check: what the engine says about every registered patch, on these facts."""

from __future__ import annotations

from collections.abc import Sequence

from ...engine import (
    APPLIED,
    DRIFT,
    FAILED,
    GATE_VERSION,
    NOT_APPLIED,
    PENDING,
    SKIPPED,
    Evaluation,
    evaluate_all,
)
from ..facts import Facts
from ..hints import Fix, patch_route_fix
from ..model import FAIL, PASS, WARN, CheckResult, result, worse


def check_patches(facts: Facts) -> CheckResult:
    title = "Patches"
    platform = facts.platform
    evaluations: Sequence[Evaluation]
    if facts.patches is None:
        evaluations = evaluate_all(platform=platform)
    else:
        evaluations = facts.patches
    entries = []
    details: list[str] = []
    status = PASS
    fixes: list[Fix] = []
    would: list[str] = []
    applied: list[str] = []
    outside: list[str] = []
    for evaluation in evaluations:
        name = evaluation.name
        ok, why, state = evaluation.would_apply, evaluation.reason, evaluation.state
        if not evaluation.loaded:
            status = FAIL
            details.append(f"{name}: FAILED TO LOAD: {evaluation.error}")
            entries.append({"name": name, "would_apply": False, "why": why, "state": "failed"})
            continue
        distribution = evaluation.distribution
        installed = evaluation.installed
        supported = evaluation.supported or "any"
        if distribution:
            target = f"{distribution} {installed or 'not installed'} (supports {supported})"
        else:
            target = ", ".join(evaluation.modules) or "-"
        if distribution and installed is None:
            line = f"{name}: {target}"  # not installed: nothing more to say
        else:
            line = f"{name}: {target}: " + ("would apply" if ok else f"would not apply ({why})")
        if state not in (NOT_APPLIED, SKIPPED):
            line += f"; in this process: {state}"
        details.append(line)
        if state in (FAILED, DRIFT):
            status = FAIL
            details.append(f"  {evaluation.state_reason}")
        if ok:
            would.append(name)
        if state in (APPLIED, PENDING):
            applied.append(name)
        if distribution and installed is not None and evaluation.gate == GATE_VERSION:
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
        f"{len(evaluations)} known; would apply here: {', '.join(would) or 'none'}; "
        f"applied in this process: {', '.join(applied) or 'none'}"
    )
    if outside and platform.affected:
        status = worse(status, WARN)
        details.append(
            f"not covered (installed version outside the patch's range): {', '.join(outside)}"
        )
    if platform.affected and would and not applied:
        fixes.append(patch_route_fix())
    return result("patches", title, status, summary, details, fixes, {"patches": entries})
