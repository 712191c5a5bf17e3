"""Entry-point discovery against the real installed metadata (built-ins + the example)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import blackwell_compat as bc
from blackwell_compat import engine, registry


def test_builtin_patches_are_registered_through_entry_points():
    regs = {r.name: r for r in registry.discover()}
    assert "torch" in regs
    assert regs["torch"].builtin and regs["torch"].error is None


def test_third_party_example_is_discovered_and_applies():
    """examples/third_party_patch is installed by the test environment (see noxfile.py)."""
    regs = {r.name: r for r in registry.discover()}
    assert "acme_resampler" in regs, "install examples/third_party_patch into the test env"
    reg = regs["acme_resampler"]
    assert reg.provider == "acme-resampler" and not reg.builtin and reg.error is None
    import torch

    acme = importlib.import_module("acme_resampler")
    signal = torch.linspace(-1, 1, 256)
    reference = acme.spectral_energy(signal)
    with bc.emulate("sm_121"):
        with pytest.raises(RuntimeError, match="invalid value for --gpu-architecture"):
            acme.spectral_energy(signal)
        report = bc.apply(only="acme_resampler")
        assert report.applied == ["acme_resampler"], str(report)
        patched = acme.spectral_energy(signal)
    torch.testing.assert_close(patched, reference)
    bc.revert()
    assert [s.state for s in bc.status() if s.name == "acme_resampler"] == ["not-applied"]


def test_third_party_example_uses_the_public_toolkit_and_its_drift_check():
    """The example is a declaration on the same toolkit as the built-ins, and the same drift
    check refuses a changed target."""
    import types

    from blackwell_compat.toolkit import DeclaredPatch

    patch = registry.discover()
    (acme,) = [r.patch for r in patch if r.name == "acme_resampler"]
    assert isinstance(acme, DeclaredPatch)
    module = importlib.import_module("acme_resampler")
    assert acme.check(module) == []
    drifted = types.ModuleType("acme_resampler")
    exec(
        "def spectral_energy(signal, n_fft=32):\n    return signal.abs() ** 2\n",
        drifted.__dict__,
    )
    assert acme.check(drifted) == [
        "acme_resampler.spectral_energy no longer uses rfft",
        "acme_resampler.spectral_energy: default of n_fft is 32, expected 64",
    ]


def test_list_command_shows_every_patch():
    proc = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "list", "--json"],
        capture_output=True,
        text=True,
    )
    data = json.loads(proc.stdout)
    names = {row["name"] for row in data["patches"]}
    assert {"torch", "acme_resampler"} <= names
    acme = next(row for row in data["patches"] if row["name"] == "acme_resampler")
    assert acme["installed"] == "1.4.2" and acme["supported"] == ">=1.4,<2"
    assert acme["would_apply"] is False and "no affected GPU" in acme["why"]
    assert proc.returncode == (1 if any(not r["loaded"] for r in data["patches"]) else 0)
    text = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "list"], capture_output=True, text=True
    ).stdout
    assert "acme_resampler  (acme-resampler)" in text
    assert "target: acme-resampler >=1.4,<2  installed: 1.4.2" in text


def test_cli_usage_errors_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "frobnicate"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "blackwell_compat"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "doctor" in proc.stdout


def test_load_patch_validation():
    class NoName(registry.Patch):
        pass

    class BadRange(registry.Patch):
        name = "bad"
        supported = ">=>1"

    with pytest.raises(TypeError, match="declares no name"):
        registry.load_patch(NoName, "x")
    with pytest.raises(TypeError, match="invalid supported range"):
        registry.load_patch(BadRange, "bad")
    assert engine.known_names()
