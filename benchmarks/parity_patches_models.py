"""Measured parity of the ``kokoro`` and ``chatterbox`` patches.

    python benchmarks/parity_patches_models.py [--markdown] [kokoro] [chatterbox]

For every golden case of ``tests/golden/cases_{kokoro,chatterbox}.py`` it computes the reference
(CPU, unpatched, no emulation) and the output inside ``bc.emulate()`` with only the case's patch
applied, per strategy, and prints the largest absolute difference, that difference relative to
the reference's largest magnitude, the relative L2 error ``|out - ref| / |ref|``, and whether the
two are bit-identical.  ``docs/patches/kokoro.md`` and ``docs/patches/chatterbox.md`` quote it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"

GROUPS = {
    "kokoro": ("golden.cases_kokoro", "kokoro", ("exact", "disable_complex")),
    "chatterbox": ("golden.cases_chatterbox", "chatterbox", (None,)),
}


def _diff(out: Any, ref: Any) -> tuple[float, float, float, bool]:
    import torch

    a, b = out.detach().to(torch.float64), ref.detach().to(torch.float64)
    same = out.dtype == ref.dtype and bool(torch.equal(out, ref))
    absolute = float((a - b).abs().max()) if a.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    l2 = float((a - b).norm() / b.norm()) if float(b.norm()) else absolute
    return absolute, absolute / scale if scale else absolute, l2, same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("groups", nargs="*", help=f"any of {', '.join(GROUPS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}")
    sys.path.insert(0, str(TESTS))

    import blackwell_compat as bc

    rows: list[tuple[str, str, str, float, float, float, bool]] = []
    for group in args.groups or list(GROUPS):
        module_name, patch, strategies = GROUPS[group]
        cases = importlib.import_module(module_name).CASES
        for name, case in cases.items():
            ref = case.run()
            for strategy in strategies:
                chosen = {patch: strategy} if strategy else None
                with bc.emulate(), bc.patched(only=patch, strategies=chosen):
                    out = case.run()
                rows.append((group, name, strategy or "-", *_diff(out, ref)))
    if args.markdown:
        print(
            "| target | case | strategy | max abs diff | max diff / max abs | rel. L2 | identical |"
        )
        print("|---|---|---|---|---|---|---|")
        for g, n, s, a, r, l2, same in rows:
            print(f"| {g} | {n} | {s} | {a:.3g} | {r:.3g} | {l2:.3g} | {'yes' if same else 'no'} |")
    else:
        for g, n, s, a, r, l2, same in rows:
            print(
                f"{g:<11} {n:<20} {s:<16} abs {a:<10.3g} rel {r:<10.3g} l2 {l2:<10.3g} "
                f"identical={same}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
