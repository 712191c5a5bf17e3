"""Maintainer tool for the Jiterator inventory: the library scan and the documentation page.

Not library runtime (the table itself is :mod:`blackwell_compat.ops.inventory`)::

    python scripts/jiterator_inventory.py               # the entries for the installed torch
    python scripts/jiterator_inventory.py --markdown > docs/inventory.md
    python scripts/jiterator_inventory.py --json
    python scripts/jiterator_inventory.py --scan [LIB]  # compare libtorch_cuda.so's kernels

The scan reads the mangled template symbols of ``libtorch_cuda.so`` (no GPU, no torch import, no
binutils).  ``tests/test_ops_inventory.py`` runs the scan for the installed torch and checks that
``docs/inventory.md`` is what :func:`markdown` prints.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from blackwell_compat.errors import NVRTC_ARCH_ERROR_LINE
from blackwell_compat.ops.inventory import (
    DTYPE_RULE_TEXTS,
    ENTRIES,
    NOT_JITTED,
    SOURCE_ROOT,
    SUPPORTED_TORCH,
    VERIFIED_BUILDS,
    JitOp,
    entries,
    installed_torch_version,
)


def describe(entry: JitOp) -> str:
    return f"{entry.name} [{', '.join(sorted(entry.dtypes))}] ({SOURCE_ROOT}{entry.source})"


# -- library scan -----------------------------------------------------------------------------

_SYMBOL = re.compile(
    rb"(?:jitted_gpu_(?:reduce_)?kernel(?:_impl)?|opmath_jitted_gpu_kernel_with_scalars)I"
    rb"XadL_ZN[A-Za-z0-9_]*?L(\d+)([a-z0-9_]+_name)EEE"
    rb"(N3c107complexI(?:f|d|N[A-Za-z0-9_]*?4HalfE)EE|N3c108BFloat16E|N3c104HalfE|[fdilsah])"
)

_MANGLED_DTYPES = {
    b"f": "float32",
    b"d": "float64",
    b"i": "int32",
    b"l": "int64",
    b"s": "int16",
    b"a": "int8",
    b"h": "uint8",
    b"N3c108BFloat16E": "bfloat16",
    b"N3c104HalfE": "float16",
    b"N3c107complexIfEE": "complex64",
    b"N3c107complexIdEE": "complex128",
}


def _mangled_dtype(token: bytes) -> str:
    if token in _MANGLED_DTYPES:
        return _MANGLED_DTYPES[token]
    if token.startswith(b"N3c107complexI") and token.endswith(b"4HalfEEE"):
        return "complex32"
    return token.decode(errors="replace")


def scan_library(path: str | os.PathLike[str]) -> dict[str, frozenset[str]]:
    """The Jiterator kernels instantiated in a ``libtorch_cuda.so``: ``{kernel: dtypes}``.

    Reads the mangled template symbols (``jitted_gpu_kernel<&at::native::abs_name, ...>``),
    so it needs no GPU, no torch import and no binutils.  Raises ``OSError`` for an unreadable
    file.
    """
    found: dict[str, set[str]] = {}
    overlap = 4096
    tail = b""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1 << 24)
            if not chunk:
                break
            data = tail + chunk
            for match in _SYMBOL.finditer(data):
                length, name, dtype = int(match.group(1)), match.group(2), match.group(3)
                if length != len(name):
                    continue
                found.setdefault(name.decode(), set()).add(_mangled_dtype(dtype))
            tail = data[-overlap:]
    return {name: frozenset(dtypes) for name, dtypes in found.items()}


def installed_library() -> str | None:
    """Path of the installed torch's ``libtorch_cuda.so`` (found without importing torch)."""
    from importlib.util import find_spec

    spec = find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for name in ("libtorch_cuda.so", "torch_cuda.dll"):
            candidate = os.path.join(root, "lib", name)
            if os.path.exists(candidate):
                return candidate
    return None


@dataclass(frozen=True)
class ScanReport:
    """How a scanned library compares with the inventory."""

    torch_version: str | None
    library: str
    kernels: dict[str, frozenset[str]]
    unclaimed: dict[str, frozenset[str]]
    """Kernels of the library that no entry names (new Jiterator ops)."""
    wider: dict[str, frozenset[str]]
    """Kernels instantiated for dtypes the entry does not list."""
    missing: tuple[str, ...]
    """Kernels an entry names that the library lacks (the op stopped being jitted)."""

    @property
    def ok(self) -> bool:
        return not (self.unclaimed or self.wider or self.missing)


def compare(
    kernels: dict[str, frozenset[str]], torch_version: str | None, library: str = ""
) -> ScanReport:
    """Compare scanned *kernels* with the entries that hold for *torch_version*."""
    applicable = entries(torch_version)
    owner: dict[str, JitOp] = {}
    required: set[str] = set()
    for entry in applicable:
        required.update(entry.kernels)
        for kernel in (*entry.kernels, *entry.extra_kernels):
            owner.setdefault(kernel, entry)
    unclaimed = {k: v for k, v in kernels.items() if k not in owner}
    wider: dict[str, frozenset[str]] = {}
    for kernel, dtypes in kernels.items():
        claimed = owner.get(kernel)
        if claimed is not None and not dtypes <= claimed.dtypes:
            wider[kernel] = dtypes - claimed.dtypes
    missing = tuple(sorted(k for k in required if k not in kernels))
    return ScanReport(torch_version, library, kernels, unclaimed, wider, missing)


# -- documentation ------------------------------------------------------------------------------

_GROUP_TITLES = {
    "complex": "Complex dtypes",
    "reduction": "Reductions",
    "real": "Real special functions",
    "integer": "Integer ops",
}


def _dtype_list(dtypes: Iterable[str]) -> str:
    order = [
        "complex32",
        "complex64",
        "complex128",
        "float16",
        "bfloat16",
        "float32",
        "float64",
        "uint8",
        "int8",
        "int16",
        "int32",
        "int64",
    ]
    return ", ".join(sorted(dtypes, key=lambda d: order.index(d) if d in order else 99))


def markdown() -> str:
    """The ``docs/inventory.md`` page (generated: edit this module, not the page)."""
    lines = [
        "# Jiterator inventory",
        "",
        "<!-- Generated by `python scripts/jiterator_inventory.py --markdown > docs/inventory.md`;"
        " edit blackwell_compat/ops/inventory.py instead. -->",
        "",
        "Every ATen op and dtype that PyTorch compiles at run time with NVRTC (the *Jiterator*) "
        "on CUDA. On a GPU whose architecture the loaded NVRTC does not know, each of these "
        f"raises `{NVRTC_ARCH_ERROR_LINE}` the first time it "
        "runs. The op guard (`bc.apply()`, patch `torch`) replaces exactly these, the emulation "
        "(`bc.emulate()`) makes exactly these fail on CPU tensors, and `audit` reports exactly "
        "these.",
        "",
        f"Torch releases covered: `{SUPPORTED_TORCH}`. Source files are under "
        f"`{SOURCE_ROOT}` in the PyTorch repository.",
        "",
        "## How the table was made",
        "",
        "1. Read from PyTorch's CUDA sources: each `jitted_gpu_kernel`, "
        "`opmath_jitted_gpu_kernel_with_scalars` and `jitted_gpu_reduce_kernel` call under "
        "`#if AT_USE_JITERATOR()`, with the dtype dispatch around it.",
        "2. Checked against the built libraries: each instantiation of those templates leaves a "
        "symbol naming the kernel and its scalar type in `libtorch_cuda.so`. "
        "`python scripts/jiterator_inventory.py --scan` lists them for the installed torch and "
        "compares them with this table; the builds "
        + ", ".join(f"`{b}`" for b in VERIFIED_BUILDS)
        + " were compared (the test suite repeats the check for the installed torch).",
        "3. The ATen overloads intercepted for each op are found at run time: every overload of "
        "the op (and its in-place twin) that has its own CPU or CUDA kernel. Composite overloads "
        "(`torch.absolute`, `abs_`, `mul.Scalar`, `special_gammaln`...) decompose into those, "
        "so functional, method, in-place and `out=` forms are all covered.",
        "",
        "### Where this differs from earlier write-ups",
        "",
        "- `tan` and `tanh` on complex tensors *are* jitted in torch 2.6 to 2.9; torch 2.10 "
        "disabled them. `acos`, `asin`, `acosh`, `asinh` are not jitted in any covered release.",
        "- Complex `logaddexp` is jitted from torch 2.10 on (it did not exist on CUDA before).",
        "- `exp2` and `sinc` are also jitted for complex64/complex128; `sigmoid`, `sqrt`, "
        "`rsqrt`, `exp`, `log`, `sin`, `cos`, `sinh`, `cosh`, `atan`, `atanh` also for "
        "complex32.",
        "- `nansum` is jitted for every complex dtype, not only complex32.",
        "- `prod` is jitted for every output dtype but bool, including float16/bfloat16 and "
        "integers.",
        "",
        "## How the dtype is decided",
        "",
        "| rule | dtype that selects the kernel |",
        "|---|---|",
    ]
    lines += [f"| `{rule}` | {text} |" for rule, text in DTYPE_RULE_TEXTS.items()]
    for group, title in _GROUP_TITLES.items():
        lines += ["", f"## {title}", "", "| op | dtypes | torch | rule | kernels | source |"]
        lines.append("|---|---|---|---|---|---|")
        for entry in ENTRIES:
            if entry.group != group:
                continue
            kernels = ", ".join(f"`{k}`" for k in (*entry.kernels, *entry.extra_kernels))
            lines.append(
                f"| `{entry.name}` | {_dtype_list(entry.dtypes)} | `{entry.torch}` | "
                f"`{entry.rule}` | {kernels} | `{entry.source}` |"
            )
        lines.append("")
        for entry in ENTRIES:
            if entry.group == group and (entry.forms or entry.note):
                text = ", ".join(f"`{form}`" for form in entry.forms)
                if entry.note:
                    text = f"{text}. {entry.note}" if text else entry.note
                lines.append(f"- `{entry.name}`: {text}")
    lines += [
        "",
        "## Not jitted (safe building blocks)",
        "",
        "These keep working on an affected GPU and under emulation:",
        "",
    ]
    lines += [f"- {ops}: {why}" for ops, why in NOT_JITTED.items()]
    lines += [
        "",
        "Other NVRTC users fail the same way and are outside this table: "
        "`torch.cuda.jiterator._create_jit_fn` (user kernels) and the TorchScript fuser's "
        "fused kernels. Emulation and `audit` see both, and the ladder serves them: see "
        "[Fused kernels](fused-kernels.md). "
        "Triton (`torch.compile`) is a separate problem (its `ptxas`).",
        "",
    ]
    return "\n".join(lines)


def _format_scan(report: ScanReport) -> str:
    lines = [f"library: {report.library}", f"torch: {report.torch_version or 'unknown'}", ""]
    for kernel in sorted(report.kernels):
        lines.append(f"  {kernel:<40} {_dtype_list(report.kernels[kernel])}")
    lines.append("")
    if report.ok:
        lines.append("matches the inventory")
    for kernel, dtypes in sorted(report.unclaimed.items()):
        lines.append(f"NEW: {kernel} [{_dtype_list(dtypes)}] is not in the inventory")
    for kernel, dtypes in sorted(report.wider.items()):
        lines.append(f"WIDER: {kernel} is also jitted for {_dtype_list(dtypes)}")
    for kernel in report.missing:
        lines.append(f"GONE: {kernel} is listed but not jitted in this build")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python scripts/jiterator_inventory.py",
        description="The Jiterator op/dtype inventory of blackwell-compat.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--markdown", action="store_true", help="print docs/inventory.md")
    mode.add_argument("--json", action="store_true", help="print the entries as JSON")
    mode.add_argument(
        "--scan",
        nargs="?",
        const="",
        metavar="LIB",
        help="list the Jiterator kernels of LIB (default: the installed libtorch_cuda.so) "
        "and compare them with the inventory; exit 1 on a difference",
    )
    parser.add_argument(
        "--torch", metavar="VERSION", help="torch version to filter by (default: installed)"
    )
    args = parser.parse_args(argv)
    version = args.torch or installed_torch_version()
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    if args.scan is not None:
        library = args.scan or installed_library()
        if not library:
            print("no libtorch_cuda.so found: give its path", file=sys.stderr)
            return 2
        try:
            kernels = scan_library(library)
        except OSError as exc:
            print(f"cannot read {library}: {exc}", file=sys.stderr)
            return 2
        report = compare(kernels, version, library)
        print(_format_scan(report))
        return 0 if report.ok else 1
    data = [e.as_dict() for e in entries(version if args.torch else None)]
    if args.json:
        print(json.dumps({"torch": version, "entries": data}, indent=2))
    else:
        for entry in entries(version):
            print(describe(entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
