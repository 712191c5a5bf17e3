"""Golden files: small JSON summaries of reference outputs, with the versions that made them.

A golden file ``tests/golden/<name>.json`` looks like::

    {"versions": {"python": "3.11.7", "torch": "2.11.0+cu130", ...},
     "cases": {"kaldi_fbank": {"shape": [98, 23], "dtype": "torch.float32",
                               "sum": ..., "mean": ..., "std": ..., "min": ..., "max": ...,
                               "abs_max": ..., "head": [16 values], "tail": [16 values]}}}

Summaries, not whole tensors: the project's goldens stay far below a megabyte.  Complex tensors
are summarised through ``view_as_real``.  Statistics are computed in float64.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).resolve().parent
HEAD = 16

# Goldens are compared loosely: they were produced by one torch build and may be checked on
# another (a different BLAS, FFT or SLEEF version moves float32 results by a few ulps, and log
# features amplify that near their floor).  The strict check of every parity test is against a
# live reference computed in the same process; the golden proves that reference itself did
# not drift.
GOLDEN_RTOL = 1e-4
GOLDEN_ATOL_SCALE = 1e-4  # absolute tolerance, relative to the largest magnitude in the tensor


def _real_view(tensor: Any) -> Any:
    import torch

    t = tensor.detach().cpu()
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.to(torch.float64)


def summarize(tensor: Any) -> dict[str, Any]:
    """Shape, dtype, float64 statistics and the first/last values of *tensor*."""
    t = _real_view(tensor)
    flat = t.reshape(-1)
    finite = flat[flat.isfinite()]
    stats = finite if finite.numel() else flat
    return {
        "shape": list(tensor.shape),
        "dtype": str(tensor.dtype),
        "sum": float(stats.sum()) if stats.numel() else 0.0,
        "mean": float(stats.mean()) if stats.numel() else 0.0,
        "std": float(stats.std()) if stats.numel() > 1 else 0.0,
        "min": float(stats.min()) if stats.numel() else 0.0,
        "max": float(stats.max()) if stats.numel() else 0.0,
        "abs_max": float(stats.abs().max()) if stats.numel() else 0.0,
        "nonfinite": int(flat.numel() - finite.numel()),
        "head": [float(v) for v in flat[:HEAD]],
        "tail": [float(v) for v in flat[-HEAD:]] if flat.numel() > HEAD else [],
    }


def versions(distributions: Iterable[str]) -> dict[str, str | None]:
    from importlib import metadata

    found: dict[str, str | None] = {"python": platform.python_version()}
    for dist in distributions:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    try:
        import torch

        found["torch"] = torch.__version__
    except ImportError:
        pass
    return found


def path_for(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.json"


def load(name: str) -> dict[str, Any]:
    path = path_for(name)
    if not path.exists():
        raise FileNotFoundError(
            f"golden file {path} is missing; create it with "
            f"'python tests/golden/regenerate.py {name}'"
        )
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def save(name: str, summaries: Mapping[str, dict[str, Any]], distributions: Iterable[str]) -> Path:
    data = {"versions": versions(distributions), "cases": dict(sorted(summaries.items()))}
    path = path_for(name)
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    return path


def _close(a: float, b: float, atol: float, rtol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


def mismatches(
    expected: Mapping[str, Any],
    tensor: Any,
    *,
    rtol: float = GOLDEN_RTOL,
    atol_scale: float = GOLDEN_ATOL_SCALE,
) -> list[str]:
    """How *tensor* differs from the golden summary *expected* (empty: it matches)."""
    actual = summarize(tensor)
    problems: list[str] = []
    if actual["shape"] != expected["shape"]:
        return [f"shape {actual['shape']} != golden {expected['shape']}"]
    if actual["dtype"] != expected["dtype"]:
        problems.append(f"dtype {actual['dtype']} != golden {expected['dtype']}")
    if actual["nonfinite"] != expected["nonfinite"]:
        problems.append(f"{actual['nonfinite']} non-finite values, golden {expected['nonfinite']}")
    if not expected["dtype"].startswith(("torch.float", "torch.complex", "torch.bfloat")):
        rtol, atol_scale = 0.0, 0.0  # integer outputs (token ids) must match exactly
    scale = max(1.0, float(expected["abs_max"]))
    atol = atol_scale * scale
    count = max(1, math.prod(expected["shape"]))
    for key in ("mean", "min", "max", "abs_max", "std"):
        if not _close(actual[key], expected[key], atol, rtol):
            problems.append(f"{key} {actual[key]!r} != golden {expected[key]!r}")
    # A sum accumulates the per-element tolerance over every element.
    if not _close(actual["sum"], expected["sum"], atol * count, rtol):
        problems.append(f"sum {actual['sum']!r} != golden {expected['sum']!r}")
    for key in ("head", "tail"):
        for i, (a, b) in enumerate(zip(actual[key], expected[key], strict=False)):
            if not _close(a, b, atol, rtol):
                problems.append(f"{key}[{i}] {a!r} != golden {b!r}")
                break
    return problems


def assert_matches_golden(name: str, case: str, tensor: Any, **tolerances: float) -> None:
    golden = load(name)
    cases = golden["cases"]
    if case not in cases:
        raise AssertionError(
            f"no golden for case {case!r} in {path_for(name)}; run "
            f"'python tests/golden/regenerate.py {name}'"
        )
    problems = mismatches(cases[case], tensor, **tolerances)
    if problems:
        made_by = ", ".join(f"{k} {v}" for k, v in golden["versions"].items())
        raise AssertionError(
            f"{name}/{case} differs from its golden (made with {made_by}): " + "; ".join(problems)
        )
