"""The audit's text report (how to read it: docs/audit.md)."""

from __future__ import annotations

from .model import AuditReport, OpUse, short_path


def _shape_text(shapes: list[list[list[int]]]) -> str:
    shown = ["x".join(map(str, s[0])) if s and s[0] else "()" for s in shapes[:3]]
    more = " ..." if len(shapes) > 3 else ""
    return ", ".join(f"[{s}]" for s in shown) + more


#: The fused ops the text report shows before it abbreviates (the JSON report has them all).
SHOWN_OPS = 10


def _ops_text(ops: list[str]) -> str:
    """The fused ops, the first :data:`SHOWN_OPS` of a long chain and how many there are."""
    if len(ops) <= SHOWN_OPS:
        return ", ".join(ops)
    return ", ".join(ops[:SHOWN_OPS]) + f", ... ({len(ops)} ops)"


def _use_text(use: OpUse) -> str:
    """``abs [complex64] x 3``; a fused kernel ``fused <kernel> in <function> [float32] x 3``;
    a user kernel ``jiterator <name> (user kernel) [float32] x 1``."""
    if use.kind == "fused":
        return f"fused {use.kernel} in {use.entry} [{use.dtype}] x {use.count}"
    if use.kind == "user":
        return f"jiterator {use.kernel} (user kernel) [{use.dtype}] x {use.count}"
    return f"{use.entry} [{use.dtype}] x {use.count}"


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
        status = site_report.status
        uses = list(site_report.uses.values())
        head = site_report.site.describe()
        for index, use in enumerate(uses):
            prefix = (
                f"{status:<8} {head:<{width}} {site_report.calls:>6}"
                if index == 0
                else f"{'':<8} {'':<{width}} {'':>6}"
            )
            lines.append(f"{prefix}  {_use_text(use)}  {_shape_text(use.shapes)}")
        if site_report.site.code:
            lines.append(f"{'':<8}   > {site_report.site.code}")
        for use in uses:
            if use.kind == "fused":
                where = f" (at {short_path(use.source)})" if use.source else ""
                lines.append(
                    f"{'':<8}   fused ops of {use.kernel}: {_ops_text(use.fused_ops)}{where}"
                )
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
    by_rung = [s.status for s in guarded]
    count = sum("guarded" in r for r in by_rung)
    if count:
        lines.append(
            f"{count} call site(s) run through the op guard's rewrites (correct, slower "
            "than a native kernel; a targeted patch or a real-valued rewrite avoids them)."
        )
    count = sum("fuser" in r for r in by_rung)
    if count:
        lines.append(
            f"{count} call site(s) of scripted functions run unfused: the GPU fuser is off (the "
            "fuser rung, or your own switch), so their ops run one by one through precompiled "
            "kernels (correct, slower than the fused kernel)."
        )
    count = sum("remedy" in r for r in by_rung)
    if count:
        lines.append(
            f"{count} call site(s) compile with the NVRTC remedy's library, which knows "
            f"{report.arch} (as fast as on a supported GPU)."
        )
    fused = [s for s in failing if any(u.kind == "fused" for u in s.uses.values())]
    if fused:
        lines.append(
            f"{len(fused)} of them run a fused kernel of a scripted function (the TorchScript "
            "fuser compiles it with NVRTC): served by the NVRTC remedy or, where it cannot "
            "serve, by the fuser rung (the GPU fuser off)."
        )
    user = [s for s in failing if any(u.kind == "user" for u in s.uses.values())]
    if user:
        lines.append(
            f"{len(user)} of them call a Jiterator kernel the program wrote "
            "(torch.cuda.jiterator._create_jit_fn): only the NVRTC remedy serves those "
            "(`python -m blackwell_compat fetch nvrtc`); the program stopped at the first."
        )
    return "\n".join(lines)
