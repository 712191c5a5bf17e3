"""Run the doctor's checks on facts and bundle the report."""

from __future__ import annotations

import os
import traceback
from collections.abc import Sequence

from ..versions import __version__
from .checks import CHECKS
from .facts import Facts
from .model import FAIL, Check, CheckResult, Report


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
    results = run_checks(facts, checks)
    return Report(
        checks=results,
        platform=facts.platform.as_dict(),
        facts=facts.as_dict(),
        version=__version__,
    )
