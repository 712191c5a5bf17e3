"""Render a doctor :class:`~blackwell_compat.doctor.model.Report` as text or JSON.

The text fits an 80-column terminal and pastes into an issue as it is: one line per check with
a status mark, details indented under it, every hint gathered at the end, commands on lines of
their own and never wrapped (a path longer than the line stays whole).
"""

from __future__ import annotations

import json
import os
import textwrap
from typing import Any

from .model import FAIL, PASS, SKIP, WARN, Report

WIDTH = 80
MARKS = {PASS: "[PASS]", WARN: "[WARN]", FAIL: "[FAIL]", SKIP: "[SKIP]"}
_INDENT = " " * 7


def _wrap(text: str, first: str, rest: str, width: int) -> list[str]:
    lines = textwrap.wrap(
        text,
        width=width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return lines or [first.rstrip()]


def render_text(report: Report, width: int = WIDTH) -> str:
    platform = report.platform
    system = platform.get("system") or {}
    where = ", ".join(
        part
        for part in (
            " ".join(p for p in (system.get("os"), system.get("machine")) if p),
            f"Python {system['python']}" if system.get("python") else "",
        )
        if part
    )
    lines = [f"blackwell-compat {report.version} doctor" + (f" ({where})" if where else "")]
    reasons = list(platform.get("reasons") or ())
    if report.affected:
        lines += _wrap("AFFECTED: " + " ".join(reasons), "Verdict: ", " " * 9, width)
    else:
        text = "not affected" + (f": {reasons[0]}" if reasons else "")
        if len(reasons) > 1:
            text += f" (and {len(reasons) - 1} more, see the NVRTC check)"
        lines += _wrap(text, "Verdict: ", " " * 9, width)
    lines.append("")
    for check in report.checks:
        mark = MARKS[check.status]
        lines += _wrap(f"{check.title}: {check.summary}", f"{mark} ", _INDENT, width)
        for detail in check.details:
            if not detail:
                continue
            lead = len(detail) - len(detail.lstrip(" "))
            body = detail.lstrip(" ")
            first = _INDENT + " " * lead
            lines += _wrap(body, first, first + "  ", width)
    hinted = [c for c in report.checks if c.hint and c.status in (FAIL, WARN)]
    if hinted:
        lines += ["", "How to fix:"]
        for check in hinted:
            lines.append(f"  {MARKS[check.status]} {check.title}:")
            for raw in (check.hint or "").splitlines():
                stripped = raw.strip()
                if stripped.startswith("$ "):
                    lines += command_lines(stripped[2:], "      $ ", width)
                elif stripped:
                    lines += _wrap(stripped, "    ", "    ", width)
    counts = {s: sum(1 for c in report.checks if c.status == s) for s in MARKS}
    lines += [
        "",
        (
            f"Result: {counts[FAIL]} failed, {counts[WARN]} warning(s), {counts[PASS]} passed, "
            f"{counts[SKIP]} skipped (exit status {report.exit_code})"
        ),
    ]
    note = _emulation_note(report, counts[FAIL])
    if note:
        lines += _wrap(note, " " * 8, " " * 8, width)
    return "\n".join(lines) + "\n"


_SHORT_NAMES = {"torch": "PyTorch", "nvrtc": "NVRTC"}


def _emulation_note(report: Report, failed: int) -> str:
    """Under emulation, say once which failures are the emulated GPU's, not this machine's.

    The checks mark a failure that only the emulated GPU causes (``data["emulated_only"]``:
    the NVRTC check, and the PyTorch check when torch has no kernels for the emulated arch); a
    reader of ``Result: 2 failed`` must not take them for problems of this machine.
    """
    arch = report.platform.get("emulated_arch")
    mine = [c for c in report.checks if c.status == FAIL and c.data.get("emulated_only")]
    if not arch or not mine:
        return ""
    names = " and ".join(_SHORT_NAMES.get(c.id, c.title) for c in mine)
    which = "failure is" if len(mine) == 1 else "failures are"
    they = "it shows" if len(mine) == 1 else "they show"
    others = failed - len(mine)
    return (
        f"The {names} {which} the emulated {arch}'s (BLACKWELL_COMPAT_EMULATE): {they} what "
        f"a real {arch} GPU meets with this stack, not a problem of this machine"
        + (f"; the other {others} failure(s) are this machine's" if others else "")
        + "."
    )


def command_lines(command: str, prefix: str, width: int = WIDTH) -> list[str]:
    """A command on one line, or split between words with POSIX shell line continuations.

    Words are never broken, so a long path stays whole, and the lines paste into a shell as
    the original command.  (On Windows the command stays on one line.)
    """
    if len(prefix) + len(command) <= width or os.name == "nt":
        return [prefix + command]
    words = command.split(" ")
    cont = " " * len(prefix) + "  "
    lines: list[str] = []
    current = prefix + words[0]
    for word in words[1:]:
        too_long = len(current) + 1 + len(word) + 2 > width  # 2: room for " \\"
        helps = len(cont) + len(word) + 2 <= width  # a break that leaves it too long is noise
        if too_long and helps:
            lines.append(current + " \\")
            current = cont + word
        else:
            current += " " + word
    lines.append(current)
    return lines


def to_json_data(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data (validated against ``schema.json`` in the tests)."""
    data: dict[str, Any] = json.loads(json.dumps(report.as_dict(), default=str))
    return data


def render_json(report: Report) -> str:
    return json.dumps(to_json_data(report), indent=2) + "\n"


def schema_path() -> str:
    """The JSON Schema of :func:`render_json`'s output, shipped inside the package."""
    return os.path.join(os.path.dirname(__file__), "schema.json")


def load_schema() -> dict[str, Any]:
    with open(schema_path(), encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data
