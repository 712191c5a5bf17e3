"""``list [--json]``: every known patch, its target, supported range and whether it applies here."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "list",
        help="list every known patch and whether it would apply here",
        description=(
            "List every patch registered in the 'blackwell_compat.patches' entry-point group "
            "with its target, supported version range, the installed version and whether it "
            "would apply on this machine. Exit status: 0, or 1 when a patch failed to load."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def rows() -> list[dict[str, Any]]:
    """One dictionary per registration: the data behind ``list`` (also used by the doctor)."""
    from ..engine import _device_gate, _version_gate, registrations, status

    states = {s.name: s for s in status()}
    result = []
    for reg in registrations():
        entry: dict[str, Any] = {
            "name": reg.name,
            "provider": reg.provider,
            "entry_point": reg.value,
        }
        patch = reg.patch
        current = states.get(reg.name)
        if patch is None or current is None or current.provider != reg.provider:
            entry.update(
                loaded=False, error=reg.error, would_apply=False, why=reg.error, state="failed"
            )
            result.append(entry)
            continue
        ok, why, version = _version_gate(patch)
        if ok:
            ok, why = _device_gate(patch, force=False)
        entry.update(
            loaded=True,
            summary=patch.summary,
            distribution=patch.distribution,
            supported=patch.supported or "any",
            installed=version,
            modules=list(patch.modules),
            strategies=list(patch.strategies),
            requires_affected=patch.requires_affected,
            would_apply=ok,
            why=why or "conditions hold",
            state=current.state,
            state_reason=current.reason,
        )
        result.append(entry)
    return result


def render(data: list[dict[str, Any]]) -> str:
    lines = []
    for row in data:
        mark = "+" if row["would_apply"] else "-"
        lines.append(f"{mark} {row['name']}  ({row['provider'] or 'unknown provider'})")
        if not row["loaded"]:
            lines.append(f"    ERROR: {row['error']}")
            continue
        lines.append(f"    {row['summary']}")
        target = row["distribution"] or ", ".join(row["modules"])
        installed = row["installed"] or ("not installed" if row["distribution"] else "-")
        lines.append(f"    target: {target} {row['supported']}  installed: {installed}")
        if row["strategies"]:
            lines.append(f"    strategies: {', '.join(row['strategies'])} (first is default)")
        verdict = "would apply" if row["would_apply"] else "would not apply"
        lines.append(f"    here: {verdict}: {row['why']}")
        lines.append(f"    in this process: {row['state']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    data = rows()
    if args.json:
        print(json.dumps({"patches": data}, indent=2, sort_keys=True))
    else:
        print(render(data))
    return 1 if any(not row["loaded"] for row in data) else 0
