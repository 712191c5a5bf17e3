"""The audit's text report (how to read it: docs/audit.md)."""

from __future__ import annotations

from .model import AuditReport


def _shape_text(shapes: list[list[list[int]]]) -> str:
    shown = ["x".join(map(str, s[0])) if s and s[0] else "()" for s in shapes[:3]]
    more = " ..." if len(shapes) > 3 else ""
    return ", ".join(f"[{s}]" for s in shown) + more


def render(report: AuditReport) -> str:
    """The text report (how to read it: docs/audit.md)."""
    lines = [
        f"blackwell-compat audit of `{report.target.describe()}` (emulating {report.arch}"
        + (" on an emulated CUDA device" if report.device == "cuda" else "")
        + (", with --fix" if report.fix else "")
        + ")",
        f"program exit code: {report.exit_code}"
        + (f" ({report.error})" if report.error else "")
        + f", {report.seconds:.1f} s",
    ]
    if report.patches:
        applied = [p["name"] for p in report.patches if p["state"] in ("applied", "pending-import")]
        lines.append(f"patches applied: {', '.join(applied) or 'none'}")
    audited = int(report.processes.get("audited", 1))
    if audited > 1:
        lines.append(f"processes audited: {audited} (the program and {audited - 1} it started)")
    if report.uncovered:
        lines.append("INCOMPLETE: calls in these processes of the program are not in this report:")
        lines += [f"  - {what}" for what in report.uncovered]
    if not report.sites:
        if report.uncovered:
            lines += ["", "No call reached a Jiterator kernel in the processes audited."]
        else:
            lines += [
                "",
                "No call reaches a Jiterator kernel: this program runs on the emulated GPU.",
            ]
        return "\n".join(lines)
    lines.append("")
    width = max(len(s.site.describe()) for s in report.sites)
    width = min(max(width, 10), 60)
    lines.append(f"{'STATUS':<8} {'CALL SITE':<{width}} {'CALLS':>6}  OP [DTYPE] x COUNT  SHAPES")
    for site_report in report.sites:
        status = "FAIL" if site_report.failing else "guarded"
        uses = list(site_report.uses.values())
        head = site_report.site.describe()
        for index, use in enumerate(uses):
            prefix = (
                f"{status:<8} {head:<{width}} {site_report.calls:>6}"
                if index == 0
                else f"{'':<8} {'':<{width}} {'':>6}"
            )
            lines.append(
                f"{prefix}  {use.entry} [{use.dtype}] x {use.count}  {_shape_text(use.shapes)}"
            )
        if site_report.site.code:
            lines.append(f"{'':<8}   > {site_report.site.code}")
    failing, guarded = report.failing_sites, report.guarded_sites
    lines.append("")
    if failing:
        lines.append(
            f"{len(failing)} call site(s) would fail with `nvrtc: error: invalid value for "
            f"--gpu-architecture (-arch)` on {report.arch}."
        )
        hint = (
            "Fix: bc.apply() at start-up (or `python -m blackwell_compat run -- ...`); "
            "re-run with --fix to check."
        )
        if report.fix:
            hint = "These remain with every patch applied: is the torch patch disabled?"
        lines.append(hint)
    if guarded:
        lines.append(
            f"{len(guarded)} call site(s) run through the op guard's rewrites (correct, slower "
            "than a native kernel; a targeted patch or a real-valued rewrite avoids them)."
        )
    return "\n".join(lines)
