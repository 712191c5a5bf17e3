"""The ``torch`` patch (op guard): declaration, gates, apply/revert, status, and GPU checks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat import engine, state
from blackwell_compat.ops import dispatcher as dispatch
from blackwell_compat.ops import rewrites
from blackwell_compat.patches.torch_guard import TorchGuardPatch

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _clean_dispatch() -> Iterator[None]:
    yield
    state.reset_for_tests()


def test_declaration() -> None:
    patch = TorchGuardPatch()
    assert patch.name == "torch"
    assert patch.modules == ("torch",)
    assert patch.distribution == "torch"
    assert patch.requires_affected
    names = {reg.name: reg for reg in engine.registrations(refresh=True)}
    assert isinstance(names["torch"].patch, TorchGuardPatch)
    assert names["torch"].builtin


def test_drift_check_passes_on_the_installed_torch() -> None:
    assert TorchGuardPatch().check(torch) == []


def test_drift_check_names_what_is_missing() -> None:
    """check() reads only attributes: an incomplete module object shows what it reports."""
    fake = types.ModuleType("torch")
    fake.library = types.SimpleNamespace()  # type: ignore[attr-defined]
    fake._C = types.SimpleNamespace()  # type: ignore[attr-defined]
    problems = TorchGuardPatch().check(fake)
    assert any("torch.library.Library" in p for p in problems)
    assert any("_dispatch_keyset_full_after" in p for p in problems)


def test_not_applied_without_an_affected_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    platform = bc.probe()
    if platform.affected:  # a real affected GPU: the gate opens, which is also correct
        assert bc.apply(only="torch").applied == ["torch"]
        return
    report = bc.apply(only="torch")
    assert report.skipped and "no affected GPU" in report.skipped["torch"]
    assert dispatch.installed_keys() == []


def test_apply_inside_emulation_then_revert() -> None:
    z = torch.tensor([3 + 4j])
    with bc.emulate():
        report = bc.apply(only="torch")
        assert report.applied == ["torch"]
        assert float(z.abs()) == 5.0
        status = {s.name: s for s in bc.status()}["torch"]
        assert status.state == "applied"
        assert any("overloads" in note for note in status.notes)
        assert any("computed on the CPU" in note and "lgamma" in note for note in status.notes)
        bc.revert()
        assert not dispatch.guard_enabled()
        with pytest.raises(RuntimeError, match="gpu-architecture"):
            z.abs()
    assert dispatch.installed_keys() == []


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLACKWELL_COMPAT_DISABLE", "torch")
    with bc.emulate():
        report = bc.apply(only="torch")
        assert report.skipped["torch"].startswith("disabled")
        with pytest.raises(RuntimeError, match="gpu-architecture"):
            torch.tensor([1 + 1j]).exp()


def test_apply_is_idempotent_and_patched_block_reverts() -> None:
    with bc.emulate():
        with bc.patched(only="torch"):
            bc.apply(only="torch")
            assert dispatch.guard_enabled()
            torch.tensor([1 + 1j]).exp()
        assert not dispatch.guard_enabled()


def test_every_inventory_entry_has_a_route() -> None:
    names = {spec.entry.name for spec in dispatch.overload_specs()}
    rewritten = {n for n in names if rewrites.route_for(n) == "rewrite"}
    # The complex ops users hit most must be real rewrites, never a CPU round trip.
    assert {"abs", "angle", "exp", "log", "sqrt", "mul", "sum", "prod", "pow"} <= rewritten


def test_applied_before_torch_is_imported_in_a_fresh_process(tmp_path: Path) -> None:
    """The patch waits for `import torch` (post-import hook), then guards it."""
    code = textwrap.dedent(
        """
        import blackwell_compat as bc
        with bc.emulate():
            report = bc.apply(only="torch")
            print(report.entries[0].state)
            import torch
            print(float(torch.tensor([3 + 4j]).abs()))
            print([s.state for s in bc.status() if s.name == "torch"][0])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    state_before, value, state_after = result.stdout.split()
    assert state_before == "pending-import"
    assert value == "5.0"
    assert state_after == "applied"


# -- GPU -----------------------------------------------------------------------------------------


@gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_parity_with_the_cpu_reference() -> None:
    """Every form of every inventory op/dtype, guard forced on CUDA, against the CPU result."""
    from support import jit_samples

    from blackwell_compat.ops import inventory

    with bc.patched(only="torch", force=True):
        for entry in inventory.entries(torch.__version__):
            for dtype in jit_samples.dtypes_of(entry):
                working = jit_samples.working_forms(entry.name, dtype)
                cpu_calls = dict(jit_samples.calls(entry.name, dtype))
                torch.set_default_device("cuda")
                try:
                    cuda_calls = dict(jit_samples.calls(entry.name, dtype))  # CUDA inputs
                    results = {form: cuda_calls[form]() for form in working}
                finally:
                    torch.set_default_device("cpu")
                for form in working:
                    want, got = cpu_calls[form](), results[form]
                    if isinstance(want, torch.Tensor):
                        assert got.device.type == "cuda", (entry.name, form)
                        torch.testing.assert_close(
                            got.cpu(), want, equal_nan=True, msg=f"{entry.name} {dtype} {form}"
                        )


@gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_forced_guard_compiles_no_kernel(tmp_path: Path) -> None:
    """With the guard forced, a run that uses every inventory op leaves the kernel cache empty;
    the same run without the guard fills it (so the check can fail)."""
    script = textwrap.dedent(
        """
        import sys, torch, blackwell_compat as bc
        if sys.argv[1] == "guard":
            assert bc.apply(only="torch", force=True).applied == ["torch"]
        z = torch.tensor([3 + 4j, 1 - 2j], device="cuda")
        x = torch.tensor([0.3, 0.7], device="cuda")
        torch.cuda.synchronize()
        z.abs(); z.angle(); z.exp(); z.log(); z.sqrt(); torch.sgn(z); z ** 0.5
        x.lgamma(); x.digamma(); torch.erfinv(x); x.prod(); torch.special.i0e(x)
        torch.gcd(torch.tensor([12], device="cuda"), torch.tensor([18], device="cuda"))
        torch.cuda.synchronize()
        """
    )
    path = tmp_path / "run.py"
    path.write_text(script)
    counts = {}
    for mode in ("guard", "plain"):
        cache = tmp_path / f"cache-{mode}"
        cache.mkdir()
        env = {
            **os.environ,
            "PYTORCH_KERNEL_CACHE_PATH": str(cache),
            "USE_PYTORCH_KERNEL_CACHE": "1",
        }
        result = subprocess.run(
            [sys.executable, str(path), mode], env=env, capture_output=True, text=True
        )
        counts[mode] = (result.returncode, sorted(p.name for p in cache.rglob("*") if p.is_file()))
        if mode == "guard":
            assert result.returncode == 0, result.stderr
    assert counts["guard"][1] == [], counts["guard"]
    # On a GPU the NVRTC knows, the unguarded run compiles and caches the kernels; on an
    # affected GPU it fails at the first jitted op instead.  Either way it did reach NVRTC.
    plain_rc, plain_files = counts["plain"]
    assert plain_files or plain_rc != 0
