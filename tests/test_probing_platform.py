"""Verdicts from facts (fake platforms with real NVRTC libraries), emulation, ``probe()``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import blackwell_compat as bc
from blackwell_compat.errors import ConfigError
from blackwell_compat.probing import (
    GPU,
    LIBRARIES,
    DriverInfo,
    NvrtcInfo,
    Platform,
    SystemInfo,
    build_platform,
    probe,
    read_nvml,
    read_nvrtc,
)

GB10 = GPU(0, "NVIDIA GB10", capability=(12, 1))
RTX5090 = GPU(0, "NVIDIA GeForce RTX 5090", capability=(12, 0))
B300 = GPU(0, "NVIDIA B300", capability=(10, 3))
H100 = GPU(0, "NVIDIA H100 80GB HBM3", capability=(9, 0))
DRIVER = DriverInfo(available=True, driver_version="580.95.05", cuda_driver_version=(13, 0))


@pytest.fixture(scope="module")
def nvrtc(nvrtc_libraries) -> dict[str, NvrtcInfo]:
    """Real NVRTC facts keyed by short version ("12.8")."""
    return {v.rsplit(".", 1)[0]: read_nvrtc(path) for v, path in nvrtc_libraries.items()}


def fake(gpus, nvrtc_info, **kwargs) -> Platform:
    return build_platform(gpus=gpus, driver=DRIVER, nvrtc=nvrtc_info, **kwargs)


# -- verdicts ---------------------------------------------------------------------------------


def test_gb10_with_nvrtc_12_8_is_affected(nvrtc):
    platform = fake([GB10], nvrtc["12.8"])
    assert platform.affected is True
    (gpu,) = platform.gpus
    assert gpu.affected is True
    path = nvrtc["12.8"].path
    assert gpu.reason == (
        f"sm_121 (NVIDIA GB10) is not in the archs NVRTC 12.8 at {path} supports "
        "(…, sm_90, sm_100, sm_101, sm_120): PyTorch's run-time compiled kernels will fail"
    )
    assert platform.reasons == (gpu.reason,)
    assert "compute capability" not in gpu.reason


@pytest.mark.parametrize(
    ("gpu", "version", "affected"),
    [
        (GB10, "12.6", True),
        (GB10, "12.8", True),
        (GB10, "12.9", False),
        (GB10, "13.0", False),
        (RTX5090, "12.6", True),
        (RTX5090, "12.8", False),
        (RTX5090, "13.0", False),
        (B300, "12.8", True),
        (B300, "12.9", False),
        (H100, "12.6", False),
        (H100, "12.8", False),
        (H100, "13.0", False),
    ],
)
def test_verdict_table(nvrtc, gpu, version, affected):
    platform = fake([gpu], nvrtc[version])
    assert platform.affected is affected
    assert platform.gpus[0].affected is affected
    reason = platform.gpus[0].reason
    assert reason.startswith(gpu.label())
    assert (" is not in the archs " in reason) is affected
    assert f"NVRTC {version} at " in reason


def test_mixed_gpus_only_the_affected_one_counts(nvrtc):
    gb10 = GPU(0, "NVIDIA GB10", capability=(12, 1))
    h100 = GPU(1, "NVIDIA H100", capability=(9, 0))
    platform = fake([gb10, h100], nvrtc["12.8"])
    assert platform.affected is True
    assert [g.affected for g in platform.gpus] == [True, False]
    assert [g.index for g in platform.affected_gpus] == [0]
    assert len(platform.reasons) == 1 and platform.reasons[0].startswith("sm_121 (NVIDIA GB10)")
    assert "sm_90 (NVIDIA H100) is in the archs NVRTC 12.8" in platform.gpus[1].reason


def test_given_verdicts_are_recomputed(nvrtc):
    lying = GPU(0, "NVIDIA H100", capability=(9, 0), affected=True, reason="made up")
    platform = fake([lying], nvrtc["13.0"])
    assert platform.affected is False and platform.gpus[0].reason != "made up"


def test_no_driver():
    platform = build_platform(
        driver=DriverInfo(available=False, error="no NVIDIA driver: NVML could not be loaded")
    )
    assert platform.affected is False
    assert platform.gpus == ()
    assert platform.reasons == ("no NVIDIA driver: NVML could not be loaded",)


def test_unloadable_nvml_reaches_the_platform(tmp_path):
    broken = tmp_path / "libnvidia-ml.so.1"
    broken.write_text("junk")
    driver, gpus = read_nvml(broken)
    platform = build_platform(gpus=gpus, driver=driver)
    assert platform.affected is False
    assert platform.reasons[0].startswith("no NVIDIA driver")


def test_driver_without_gpus():
    platform = build_platform(driver=DriverInfo(available=True, driver_version="580"))
    assert platform.reasons == ("NVML lists no NVIDIA GPU",)


def test_unknown_nvrtc_cannot_judge(tmp_path):
    broken = tmp_path / "libnvrtc.so.12"
    broken.write_text("junk")
    platform = fake([GB10], read_nvrtc(broken))
    assert platform.affected is False
    reason = platform.gpus[0].reason
    assert reason.startswith("cannot judge sm_121 (NVIDIA GB10): ")
    assert "could not be loaded as a shared library" in reason
    missing = fake([GB10], NvrtcInfo(error="no NVRTC library found (torch is not installed)"))
    assert missing.gpus[0].reason.endswith("no NVRTC library found (torch is not installed)")


def test_old_nvrtc_falls_back_to_ptx():
    old = NvrtcInfo(path="/cuda-11.7/libnvrtc.so.11.2", version=(11, 7), supported_archs=("sm_80",))
    platform = fake([GB10], old)
    assert platform.affected is False
    assert "older than 11.8" in platform.gpus[0].reason


# -- emulation (pure) -------------------------------------------------------------------------


def test_emulated_gpu_is_added_and_affected(nvrtc):
    platform = fake([H100], nvrtc["13.0"], emulated_arch="121", emulation_source="bc.emulate()")
    assert platform.emulated_arch == "sm_121"
    assert platform.affected is True
    real, emulated = platform.gpus
    assert not real.emulated and not real.affected
    assert emulated.emulated and emulated.affected and emulated.index == -1
    assert emulated.arch == "sm_121"
    assert "emulated (bc.emulate())" in emulated.reason
    assert "the real NVRTC 13.0" in emulated.reason and "does list sm_121" in emulated.reason
    assert platform.reasons == (emulated.reason,)
    assert platform.real_gpus == (real,)


def test_emulated_gpu_given_as_input_is_not_duplicated(nvrtc):
    first = fake([GB10], nvrtc["12.8"], emulated_arch="sm_121")
    again = fake(first.gpus, nvrtc["12.8"], emulated_arch="sm_121")
    assert [g.emulated for g in again.gpus] == [False, True]


# -- as_dict ----------------------------------------------------------------------------------


def test_as_dict_is_json_ready(nvrtc):
    platform = fake(
        [GB10],
        nvrtc["12.8"],
        versions={"torch": "2.8.0", "torchaudio": "2.8.0", "kokoro": "0.9.4"},
        torch_cuda="12.8",
        system=SystemInfo(os="Linux", machine="aarch64", python="3.12.3"),
        emulated_arch="sm_120",
    )
    data = json.loads(json.dumps(platform.as_dict()))
    assert data["affected"] is True
    assert data["gpus"][0]["index"] == 0
    assert data["gpus"][0]["name"] == "NVIDIA GB10"
    assert data["gpus"][0]["arch"] == "sm_121"
    assert data["gpus"][1]["emulated"] is True
    assert data["nvrtc"]["version"] == "12.8"
    assert data["nvrtc"]["supported_archs"][-3:] == ["sm_100", "sm_101", "sm_120"]
    assert data["nvrtc"]["path"] == nvrtc["12.8"].path
    assert data["torch"] == "2.8.0" and data["torch_cuda"] == "12.8"
    assert data["torchaudio"] == "2.8.0"
    assert data["libraries"]["kokoro"] == "0.9.4"
    assert set(LIBRARIES) <= set(data["libraries"])
    assert data["libraries"]["openai-whisper"] is None
    assert data["system"]["machine"] == "aarch64"
    assert len(data["reasons"]) == 2


# -- probe() on this machine ------------------------------------------------------------------


def test_probe_is_cached_and_refreshable():
    # Start from a fresh read: what earlier tests loaded into this process (NVRTC libraries
    # through ctypes) may legitimately change the answer of a probe cached before them.
    first = probe(refresh=True)
    assert probe().nvrtc is first.nvrtc
    refreshed = probe(refresh=True)
    assert refreshed.nvrtc is not first.nvrtc
    assert refreshed.nvrtc.path == first.nvrtc.path
    assert refreshed.nvrtc.version == first.nvrtc.version


def test_bc_probe_is_callable_whatever_was_imported_first():
    # The sub-package is `probing`, so importing it never rebinds `bc.probe`.
    data = _child(
        "import json\n"
        "import blackwell_compat.probing\n"
        "import blackwell_compat as bc\n"
        "p = bc.probe()\n"
        "q = bc.probe(refresh=True)\n"
        "print(json.dumps([type(p).__name__, type(q).__name__, p.nvrtc.path == q.nvrtc.path]))"
    )
    assert data == ["Platform", "Platform", True]
    assert isinstance(bc.probe(), Platform)


def test_probe_reports_this_environment():
    platform = probe()
    from blackwell_compat.versions import installed_version

    assert platform.torch == installed_version("torch")
    assert platform.torchaudio == installed_version("torchaudio")
    assert platform.system.python == ".".join(map(str, sys.version_info[:3]))
    if not platform.gpus:
        assert platform.affected is False
        assert platform.reasons and platform.reasons[0]
    json.dumps(platform.as_dict())


def test_probe_overlays_emulation_without_caching_it():
    plain = probe()
    assert all(not g.emulated for g in plain.gpus)
    with bc.emulate("sm_121"):
        inside = probe()
        assert inside.emulated_arch == "sm_121"
        assert inside.affected is True
        emulated = [g for g in inside.gpus if g.emulated]
        assert len(emulated) == 1 and emulated[0].arch == "sm_121"
        assert "bc.emulate('sm_121')" in emulated[0].reason
        assert inside.nvrtc is plain.nvrtc  # real facts are reused, not re-read
    after = probe()
    assert after.emulated_arch is None
    assert all(not g.emulated for g in after.gpus)
    assert after.affected == plain.affected


def _child(code: str, **extra_env: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKWELL_COMPAT_")}
    env.update(extra_env)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_probe_does_not_import_torch():
    data = _child(
        "import json, sys\n"
        "import blackwell_compat as bc\n"
        "p = bc.probe()\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'nvrtc': p.nvrtc.path,\n"
        "  'heavy': sorted(m for m in ('torchaudio', 'numpy', 'kokoro') if m in sys.modules)}))"
    )
    assert data["torch"] is False
    assert data["heavy"] == []


def test_probe_overlays_emulation_from_the_environment():
    data = _child(
        "import json, sys\n"
        "import blackwell_compat as bc\n"
        "p = bc.probe()\n"
        "print(json.dumps({'p': p.as_dict(), 'torch': 'torch' in sys.modules}))",
        BLACKWELL_COMPAT_EMULATE="12.0",
    )
    assert data["torch"] is False
    platform = data["p"]
    assert platform["emulated_arch"] == "sm_120"
    assert platform["affected"] is True
    emulated = [g for g in platform["gpus"] if g["emulated"]]
    assert len(emulated) == 1 and emulated[0]["arch"] == "sm_120"
    assert "BLACKWELL_COMPAT_EMULATE=sm_120" in emulated[0]["reason"]


def test_probe_is_the_function_in_any_import_order():
    data = _child(
        "import json\n"
        "import blackwell_compat as bc\n"
        "first = type(bc.probe()).__name__\n"
        "import blackwell_compat.probing as pkg\n"
        "from blackwell_compat.probing import probe, read_nvrtc\n"
        "print(json.dumps([first, type(pkg.probe()).__name__, type(probe()).__name__,\n"
        "                  bc.probe is probe, type(bc.probe(refresh=True)).__name__]))"
    )
    assert data == ["Platform", "Platform", "Platform", True, "Platform"]


def test_probe_never_raises(monkeypatch):
    # Issue 14, point 6: whatever the facts do, probe() answers and says why it knows nothing.
    from blackwell_compat.probing import platform as platform_module

    def broken(*args, **kwargs):
        raise ConfigError("sm_1210: not a GPU architecture")

    monkeypatch.setattr(platform_module, "_gather", broken)
    answer = probe(refresh=True)
    assert answer.affected is False and answer.gpus == ()
    assert "ConfigError: sm_1210" in answer.reasons[0]
    monkeypatch.undo()
    probe(refresh=True)


def test_gpu_with_an_impossible_capability_is_refused():
    for capability in ((12, 10), (-1, -1), (0, 0), (100, 0)):
        with pytest.raises(ValueError, match="no CUDA compute capability"):
            GPU(0, "odd", capability=capability)
