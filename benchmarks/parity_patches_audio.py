"""Measured parity of the part-A patches (torchaudio incl. pyannote, s3tokenizer, whisper).

    python benchmarks/parity_patches_audio.py [--markdown]

For every golden case of ``tests/golden/cases_{torchaudio,pyannote,s3tokenizer,whisper}.py``
that can be imported here, it computes the reference (CPU, unpatched, no emulation) and the
patched output inside ``bc.emulate()`` with only the case's patch applied, per strategy, and
prints the largest absolute difference, the largest difference relative to the output's
largest magnitude, and whether the two are bit-identical.  ``docs/patches/*.md`` quote it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

GROUPS = {
    "torchaudio": ("golden.cases_torchaudio", "torchaudio", ("real", "cpu")),
    "pyannote": ("golden.cases_pyannote", "torchaudio", ("real", "cpu")),
    "s3tokenizer": ("golden.cases_s3tokenizer", "s3tokenizer", ("real",)),
    "whisper": ("golden.cases_whisper", "whisper", ("real",)),
}


def _diff(out: Any, ref: Any) -> tuple[float, float, bool]:
    import torch

    wide = torch.complex128 if ref.is_complex() else torch.float64
    a, b = out.detach().to(wide), ref.detach().to(wide)
    same = out.dtype == ref.dtype and bool(torch.equal(out, ref))
    absolute = float((a - b).abs().max()) if a.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    return absolute, absolute / scale if scale else absolute, same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("groups", nargs="*", default=list(GROUPS))
    args = parser.parse_args(argv)

    import importlib

    import blackwell_compat as bc

    rows: list[tuple[str, str, str, float, float, bool]] = []
    for group in args.groups:
        module_name, patch, strategies = GROUPS[group]
        try:
            cases = importlib.import_module(module_name).CASES
        except ImportError as exc:
            print(f"{group}: skipped ({exc})", file=sys.stderr)
            continue
        for name, case in cases.items():
            try:
                ref = case.run()
            except ImportError as exc:
                print(f"{group}/{name}: skipped ({exc})", file=sys.stderr)
                continue
            for strategy in strategies:
                with bc.emulate(), bc.patched(only=patch, strategies={patch: strategy}):
                    out = case.run()
                rows.append((group, name, strategy, *_diff(out, ref)))
    if args.markdown:
        print("| target | case | strategy | max abs diff | max diff / max abs | identical |")
        print("|---|---|---|---|---|---|")
        for g, n, s, a, r, same in rows:
            print(f"| {g} | {n} | {s} | {a:.3g} | {r:.3g} | {'yes' if same else 'no'} |")
    else:
        for g, n, s, a, r, same in rows:
            print(f"{g:<12} {n:<32} {s:<5} abs {a:<10.3g} rel {r:<10.3g} identical={same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
