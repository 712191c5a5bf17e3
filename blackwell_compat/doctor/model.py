"""The doctor's data model: a check's result, the report, the statuses and the exit codes.

A check is a plain function ``(facts) -> CheckResult`` (the checks live in :mod:`.checks`,
the runner in :mod:`.runner`); the renderers (:mod:`.render`) read only these types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .hints import Fix

if TYPE_CHECKING:
    from .facts import Facts

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


def join_fixes(fixes: Sequence[Fix]) -> tuple[str | None, tuple[str, ...]]:
    """Join fixes into one hint and the list of commands (in order)."""
    if not fixes:
        return None, ()
    parts = []
    for fix in fixes:
        parts.append(fix.text)
        parts.extend(f"  $ {command}" for command in fix.commands)
    commands = tuple(c for fix in fixes for c in fix.commands)
    return "\n".join(parts), commands


def result(
    check_id: str,
    title: str,
    status: str,
    summary: str,
    details: Iterable[str] = (),
    fixes: Sequence[Fix] = (),
    data: Mapping[str, Any] | None = None,
) -> CheckResult:
    hint, commands = join_fixes(fixes)
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


def worse(status: str, other: str) -> str:
    """The more severe of two statuses (``fail`` > ``warn`` > ``pass`` > ``skip``)."""
    return max(status, other, key=_SEVERITY.__getitem__)


#: A check: facts in, result out (one that raises becomes a ``fail`` in the runner).
Check = Callable[["Facts"], CheckResult]
