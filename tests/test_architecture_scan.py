"""The maintainer tool scripts/architecture_scan.py: it finds cycles (lazy imports included),
imports inside functions, private cross-module imports and module state; and the package has
no cycle and no private cross-module import (issue 11's end state, kept)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "scripts" / "architecture_scan.py"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bc_architecture_scan", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / "blackwell_compat" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_finds_a_cycle_through_a_lazy_import_and_private_reads(tmp_path: Path) -> None:
    _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": """
                import threading
                from . import b
                _lock = threading.Lock()
                _cache: dict[str, int] = {}
                TABLE = {"x": 1}
                """,
            "b.py": """
                def later():
                    from .a import _cache
                    global _seen
                    _seen = _cache
                """,
            "c.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from . import a
                """,
        },
    )
    result = _tool().scan(tmp_path)
    assert result["cycles"] == [["blackwell_compat.a", "blackwell_compat.b"]]
    assert result["imports_inside_functions"] == 1
    assert result["private_cross_module_imports"] == [
        "blackwell_compat.b: blackwell_compat.a._cache"
    ]
    assert result["state_by_module"] == {
        "blackwell_compat.a": ["_cache"],
        "blackwell_compat.b": ["_seen"],
    }
    assert result["module_locks"] == 1 and result["global_statements"] == 1


def test_the_package_has_no_cycle_and_no_private_cross_module_import() -> None:
    done = subprocess.run(
        [sys.executable, str(TOOL), "--json"], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout)
    assert result["cycles"] == []
    assert result["private_cross_module_imports"] == []
    assert result["modules"] > 50
