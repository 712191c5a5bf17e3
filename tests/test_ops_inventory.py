"""The Jiterator inventory: its data and version ranges (runtime), the generated page and the
library scan (the maintainer tool scripts/jiterator_inventory.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blackwell_compat.ops import inventory

ROOT = Path(__file__).resolve().parent.parent
TOOL_PATH = ROOT / "scripts" / "jiterator_inventory.py"


def _load_tool():
    """The maintainer tool (scan, docs page, CLI): a script outside the runtime package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bc_jiterator_inventory", TOOL_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


tool = _load_tool()
DTYPE_NAMES = {
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
}


def test_entries_are_well_formed() -> None:
    names = [e.name for e in inventory.ENTRIES]
    assert len(names) == len(set(names))
    for entry in inventory.ENTRIES:
        assert entry.aten, entry.name
        assert entry.kernels, entry.name
        assert all(k.endswith("_name") for k in (*entry.kernels, *entry.extra_kernels))
        assert entry.dtypes and entry.dtypes <= DTYPE_NAMES, entry.name
        assert entry.rule in inventory.DTYPE_RULE_TEXTS, entry.name
        assert entry.source.endswith(".cu"), entry.name
        assert entry.group in ("complex", "reduction", "real", "integer"), entry.name
        from packaging.specifiers import SpecifierSet

        SpecifierSet(entry.torch)  # parses


def test_kernel_names_are_claimed_once() -> None:
    seen: dict[str, str] = {}
    for entry in inventory.ENTRIES:
        for kernel in entry.kernels:
            # digamma's kernel is also used by polygamma(0, x); that is the only sharing.
            if kernel in seen:
                assert {seen[kernel], entry.name} == {"digamma", "polygamma"}
            seen.setdefault(kernel, entry.name)


@pytest.mark.parametrize(
    ("version", "present", "absent"),
    [
        ("2.6.0", {"tan", "tanh", "abs"}, {"logaddexp"}),
        ("2.9.1", {"tan", "tanh"}, {"logaddexp"}),
        ("2.10.0", {"logaddexp"}, {"tan", "tanh"}),
        ("2.11.0a0+gitabc", {"logaddexp", "prod"}, {"tan"}),
    ],
)
def test_version_ranges(version: str, present: set[str], absent: set[str]) -> None:
    names = set(inventory.by_name(version))
    assert present <= names
    assert not absent & names


def test_not_jitted_ops_are_not_listed() -> None:
    names = set(inventory.by_name())
    for op in ("acos", "asin", "acosh", "asinh", "hypot", "atan2", "cumprod", "stft", "erf"):
        assert op not in names


def test_packets_include_the_in_place_twin() -> None:
    assert inventory.packets(inventory.by_name()["abs"]) == ("abs", "abs_")


def test_docs_page_is_up_to_date() -> None:
    page = (ROOT / "docs" / "inventory.md").read_text(encoding="utf-8")
    assert page == tool.markdown(), (
        "docs/inventory.md is stale: run "
        "`python scripts/jiterator_inventory.py --markdown > docs/inventory.md`"
    )


def test_markdown_lists_every_entry() -> None:
    page = tool.markdown()
    for entry in inventory.ENTRIES:
        assert f"| `{entry.name}` |" in page


def test_cli_json_and_markdown() -> None:
    result = subprocess.run(
        [sys.executable, str(TOOL_PATH), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    data = json.loads(result.stdout)
    assert {e["name"] for e in data["entries"]} == {e.name for e in inventory.ENTRIES}


def test_compare_reports_new_wider_and_gone_kernels() -> None:
    kernels = {
        "abs_name": frozenset({"complex64", "complex32", "complex128"}),
        "brand_new_name": frozenset({"float32"}),
        "exp_name": frozenset({"complex64", "float32"}),
    }
    report = tool.compare(kernels, "2.11.0")
    assert "brand_new_name" in report.unclaimed
    assert report.wider == {"exp_name": frozenset({"float32"})}
    assert "sqrt_name" in report.missing
    assert not report.ok


def test_scan_parses_mangled_symbols(tmp_path: Path) -> None:
    # Symbols as g++ mangles them in libtorch_cuda.so (one per kernel/dtype instantiation).
    symbols = [
        b"_ZN2at6native17jitted_gpu_kernelIXadL_ZNS0_L8abs_nameEEEN3c107complexIfEES4_Li1EJEEEvRNS_18"
        b"TensorIteratorBaseERKSsNS_4cuda3jit17BinaryFuncVariantENS_10OpMathTypeIT1_E4typeESt5tuple",
        b"_ZN2at6native17jitted_gpu_kernelIXadL_ZNS0_L8i0e_nameEEEN3c108BFloat16ES3_Li1EJEEEvRNS_18",
        b"_ZN2at6native24jitted_gpu_reduce_kernelIXadL_ZNS0_L9prod_nameEEElLi4EdEEvRNS_14TensorIterator",
        b"_ZN2at6native24jitted_gpu_reduce_kernelIXadL_ZNS0_L8sum_nameEEEN3c107complexINS2_4HalfEEES5_",
        b"_ZN2at6native17jitted_gpu_kernelIXadL_ZNS0_L8gcd_nameEEEaaLi2EJEEEvRNS_18TensorIteratorBaseE",
    ]
    library = tmp_path / "libfake.so"
    library.write_bytes(b"\0junk\0".join(symbols) + b"\0")
    assert tool.scan_library(library) == {
        "abs_name": frozenset({"complex64"}),
        "i0e_name": frozenset({"bfloat16"}),
        "prod_name": frozenset({"int64"}),
        "sum_name": frozenset({"complex32"}),
        "gcd_name": frozenset({"int8"}),
    }


@pytest.mark.slow
def test_installed_torch_matches_the_inventory() -> None:
    """Read the installed libtorch_cuda.so and compare its Jiterator kernels with the table."""
    import torch

    library = tool.installed_library()
    if library is None:
        # A CPU-only build compiles nothing with NVRTC: nothing to compare, and it must say so.
        assert torch.version.cuda is None
        return
    report = tool.compare(tool.scan_library(library), torch.__version__, library)
    assert report.kernels, f"no Jiterator kernel found in {library}: the scanner is broken"
    assert report.ok, (report.unclaimed, report.wider, report.missing)
