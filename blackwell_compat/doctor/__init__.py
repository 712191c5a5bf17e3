"""``python -m blackwell_compat doctor``: what is wrong with this stack and what to install.

Facts are gathered in one place (:mod:`.facts`, risky probes in child processes with a
timeout), judged by plain functions (:mod:`.checks`, run by :mod:`.runner`, on the data
model of :mod:`.model`) and rendered separately (:mod:`.render`)::

    from blackwell_compat.doctor import diagnose
    report = diagnose()            # reads this machine
    report.exit_code, report.as_dict()

Importing this package imports neither torch nor any probe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Report
    from .process import Timeouts


def diagnose(*, smoke: bool = False, timeouts: Timeouts | None = None) -> Report:
    """Gather this machine's facts and run every check (never raises for what it finds)."""
    # Imported here: the doctor's child processes (``-m blackwell_compat.doctor.stack_child``,
    # ``.smoke``) import this package first, and must not pay for the checks (about 250 ms).
    from .facts import gather
    from .runner import build_report

    return build_report(gather(smoke=smoke, timeouts=timeouts))


__all__ = ["diagnose"]
