"""``list [--json]``: every known patch, its target, supported range and whether it applies here;
per GPU, which rung of the remedy ladder would serve it."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine import Evaluation


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
    """One dictionary per registration: the data behind ``list`` (the engine's evaluations)."""
    # Imported here: the parser imports every command module, and the engine at module level
    # made `--version`/`--help` about 50 ms slower (measured, best of 7 runs).
    from ..engine import evaluate_all

    return [row(evaluation) for evaluation in evaluate_all()]


def row(evaluation: Evaluation) -> dict[str, Any]:
    """``list``'s JSON object for one :class:`~blackwell_compat.engine.Evaluation`."""
    entry: dict[str, Any] = {
        "name": evaluation.name,
        "provider": evaluation.provider,
        "entry_point": evaluation.entry_point,
    }
    if not evaluation.loaded:
        entry.update(
            loaded=False,
            error=evaluation.error,
            would_apply=False,
            why=evaluation.error,
            state="failed",
        )
        return entry
    entry.update(
        loaded=True,
        summary=evaluation.summary,
        distribution=evaluation.distribution,
        supported=evaluation.supported or "any",
        installed=evaluation.installed,
        modules=list(evaluation.modules),
        strategies=list(evaluation.strategies),
        requires_affected=evaluation.requires_affected,
        would_apply=evaluation.would_apply,
        why=evaluation.reason,
        state=evaluation.state,
        state_reason=evaluation.state_reason,
    )
    return entry


def gpus() -> list[dict[str, Any]]:
    """Per GPU, which rung of the remedy ladder ``apply()`` would serve it with, and why."""
    from ..engine import ladder  # see rows()

    return [service.as_dict() for service in ladder(planned=True)]


def render_gpus(data: list[dict[str, Any]]) -> str:
    """The ladder section of ``list``: one paragraph per GPU."""
    names = {
        "not-affected": "not affected",
        "nvrtc-remedy": "the NVRTC remedy (nothing patched)",
        "patches": "patches",
        "fuser": "the fuser rung",
        "unserved": "NOT SERVED",
    }
    lines = []
    for gpu in data:
        rung = names.get(gpu["rung"], gpu["rung"])
        if gpu["patches"]:
            rung = f"{rung}: {', '.join(gpu['patches'])}"
        lines.append(f"* {gpu['gpu']}: {rung}")
        lines.append(f"    why: {gpu['why']}")
        if "user_kernels" in gpu:
            lines.append(f"    user Jiterator kernels (_create_jit_fn): {gpu['user_kernels']}")
        if gpu["triton"]:
            lines.append(f"    torch.compile: {gpu['triton']}")
        if gpu.get("fuser"):
            lines.append(f"    fused TorchScript kernels: {gpu['fuser']}")
    return "\n".join(lines)


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
    served = gpus()
    if args.json:
        print(json.dumps({"patches": data, "gpus": served}, indent=2, sort_keys=True))
    else:
        print(render(data))
        if served:
            print("\nGPUs (the remedy ladder, cheapest rung first):")
            print(render_gpus(served))
    return 1 if any(not row["loaded"] for row in data) else 0
