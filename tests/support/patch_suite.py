"""Test scaffolding shared by the targeted-patch parity tests (s3tokenizer, whisper, torchaudio).

:class:`GoldenParity` holds the four tests every case of a patch's golden registry goes through
(see :mod:`support.audio_parity` for the three steps); a test module subclasses it as
``TestGoldenParity`` and names the patch, the case module and the case list.
:func:`module_copy` builds the changed module a drift check is tried on;
:func:`lazy_apply_states` and :func:`run_gpu_script` run the child-process checks and hand the
decoded result back to the test, which makes its own assertions on it.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
from support.audio_parity import (
    assert_fails_unpatched,
    empty_kernel_cache_env,
    patched_run,
    reference,
)

TESTS_DIR = str(Path(__file__).resolve().parent.parent)


class GoldenParity:
    """(1) the CPU reference matches the golden, (2) it fails under emulation unpatched, (3)
    under emulation with only ``PATCH`` it matches the reference (:meth:`compare`) and the
    golden.  The golden registry is named like the patch."""

    PATCH: ClassVar[str]
    CASES_MODULE: ClassVar[str]  # a module of tests/golden/ with a ``CASES`` dict
    CASE_NAMES: ClassVar[tuple[str, ...]]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "name" in metafunc.fixturenames:
            metafunc.parametrize("name", self.CASE_NAMES)

    @classmethod
    def cases(cls) -> dict[str, Any]:
        cases: dict[str, Any] = importlib.import_module(cls.CASES_MODULE).CASES
        return cases

    @pytest.fixture(scope="class")
    @classmethod
    def references(cls) -> dict[str, Any]:
        from blackwell_compat import state as process_state

        process_state.reset_for_tests()
        return {name: reference(case.run) for name, case in cls.cases().items()}

    def compare(self, out: Any, ref: Any) -> None:
        """How a patched output must agree with the reference (float32 ``assert_close``
        defaults unless a subclass says otherwise)."""
        import torch

        torch.testing.assert_close(out, ref)

    def test_case_list_matches_the_golden_registry(self) -> None:
        from golden import store

        registry = store.load(self.PATCH)["cases"]
        assert sorted(self.CASE_NAMES) == sorted(self.cases()) == sorted(registry)

    def test_reference_matches_golden(self, name: str, references: dict[str, Any]) -> None:
        from golden import store

        store.assert_matches_golden(self.PATCH, name, references[name])

    def test_unpatched_fails_under_emulation(self, name: str) -> None:
        assert_fails_unpatched(self.cases()[name].run)

    def test_patched_matches_reference(self, name: str, references: dict[str, Any]) -> None:
        from golden import store

        out = patched_run(self.cases()[name].run, self.PATCH)
        self.compare(out, references[name])
        store.assert_matches_golden(self.PATCH, name, out)


def module_copy(module: types.ModuleType, **changes: Any) -> types.ModuleType:
    """A module of the same name holding *module*'s attributes with *changes* on top (``None``
    removes the attribute): the input of a drift check against a changed release."""
    copy = types.ModuleType(module.__name__)
    copy.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    for key, value in changes.items():
        if value is None:
            delattr(copy, key)
        else:
            setattr(copy, key, value)
    return copy


def run_json_script(
    script: str, *argv: str, timeout: int = 300, env: dict[str, str] | None = None
) -> Any:
    """Run *script* with ``python -c`` in a child process; it must succeed and print one JSON
    document on its last line, which is returned decoded."""
    result = subprocess.run(
        [sys.executable, "-c", script, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


_LAZY = textwrap.dedent(
    """
    import importlib, json, sys
    import blackwell_compat as bc
    patch, module, function = sys.argv[1:4]
    state = bc.apply(only=[patch], force=True).entries[0].state
    assert module not in sys.modules
    target = importlib.import_module(module)
    from blackwell_compat import inplace
    (status,) = [s for s in bc.status() if s.name == patch]
    print(json.dumps([state, status.state, inplace.is_swapped(getattr(target, function))]))
    """
)


def lazy_apply_states(patch: str, module: str, function: str) -> Any:
    """In a fresh interpreter: apply *patch* before *module* is imported, import it, and return
    ``[state after apply, state after the import, whether module.function is swapped]``."""
    return run_json_script(_LAZY, patch, module, function)


def run_gpu_script(script: str, tmp_path: Path, *argv: str) -> Any:
    """Run a CUDA check *script* whose Jiterator compiles (if any) land in an empty kernel
    cache under *tmp_path*; the script gets the tests directory (for ``golden`` and
    ``support``) as ``sys.argv[1]``, then *argv*."""
    cache = tmp_path / "kernels"
    cache.mkdir()
    env = empty_kernel_cache_env(str(cache))
    return run_json_script(script, TESTS_DIR, *argv, timeout=600, env=env)
