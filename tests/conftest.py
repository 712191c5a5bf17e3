"""Shared fixtures.  Sections are owned by the modules they serve; keep them separate."""

from __future__ import annotations

import os

import pytest

# -- native verdict store (probe) ---------------------------------------------------------------
# The probe stores what its test processes found out about NVML/NVRTC in a per-user cache; the
# tests keep theirs in a folder of the session (inherited by the interpreters they start).

if not os.environ.get("BLACKWELL_COMPAT_CACHE_DIR"):
    import tempfile

    os.environ["BLACKWELL_COMPAT_CACHE_DIR"] = tempfile.mkdtemp(prefix="bc-test-verdicts-")

# -- NVRTC remedy (remedies) -----------------------------------------------------------------
# Off in the test process and what it starts, unless a test sets it: a capable NVRTC on the
# machine (a CUDA toolkit) would otherwise serve every emulated arch and no emulated op would
# fail.  tests/test_remedies_nvrtc*.py turn it on in their own child processes.

os.environ.setdefault("BLACKWELL_COMPAT_NVRTC", "off")

# -- engine state (core) ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_blackwell_state():
    """Every test starts and ends with nothing patched and no emulation."""
    from blackwell_compat import state

    before = {
        k: os.environ.get(k) for k in ("BLACKWELL_COMPAT_DISABLE", "BLACKWELL_COMPAT_STRATEGY")
    }
    yield
    state.reset_for_tests()
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# -- dispatcher registrations (ops) -------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``registration`` runs once per way of registering the dispatcher kernel
    that the installed torch offers (``backend`` needs torch >= 2.9)."""
    if "registration" in metafunc.fixturenames:
        import torch

        from blackwell_compat.ops import dispatcher

        available = [dispatcher.BACKEND_SELECT]
        if hasattr(torch.library, "get_kernel"):
            available.append(dispatcher.BACKEND)
        metafunc.parametrize("registration", available, indirect=True)


@pytest.fixture
def registration(request: pytest.FixtureRequest):
    """The dispatcher registration forced for the test (see ``pytest_generate_tests``)."""
    from blackwell_compat.ops import dispatcher

    dispatcher.set_registration(request.param)
    yield request.param
    dispatcher.set_registration(None)


# -- NVRTC wheels (probe) -----------------------------------------------------------------------
# Real NVRTC libraries for the probe tests.  The nox session fetches them into .nox/_nvrtc and
# exports BLACKWELL_COMPAT_TEST_NVRTC_DIR; a plain `pytest` fetches them into .nvrtc-wheels/.

NVRTC_TEST_VERSIONS = ("12.6.77", "12.8.93", "12.9.86", "13.0.88")


def _fetch_nvrtc_module():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent / "support" / "fetch_nvrtc.py"
    spec = importlib.util.spec_from_file_location("_bc_fetch_nvrtc", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return script, module


@pytest.fixture(scope="session")
def nvrtc_libraries() -> dict[str, str]:
    """``{"12.8.93": "/…/libnvrtc.so.12", …}``: one real NVRTC library per tested version."""
    import subprocess
    import sys
    from pathlib import Path

    script, fetch = _fetch_nvrtc_module()
    root = os.environ.get("BLACKWELL_COMPAT_TEST_NVRTC_DIR") or str(
        Path(__file__).resolve().parent.parent / ".nvrtc-wheels"
    )
    missing = [v for v in NVRTC_TEST_VERSIONS if not fetch.is_complete(os.path.join(root, v))]
    if missing:
        result = subprocess.run(
            [sys.executable, str(script), root], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            pytest.fail(
                f"could not fetch the NVRTC wheels {missing} into {root} "
                f"(run `python {script} {root}` by hand):\n{result.stderr[-2000:]}"
            )
    libraries = {v: fetch.library_in(os.path.join(root, v)) for v in NVRTC_TEST_VERSIONS}
    absent = [v for v, path in libraries.items() if path is None]
    if absent:
        pytest.fail(f"NVRTC libraries missing under {root}: {absent}")
    return libraries
