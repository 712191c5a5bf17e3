"""NVML through ctypes: GPUs, driver, and the answers without a driver."""

from __future__ import annotations

import json

import pytest

from blackwell_compat.errors import ConfigError
from blackwell_compat.probing import GPU, DriverInfo, read_nvml
from blackwell_compat.probing.nvml import default_library_names

_DRIVER, _GPUS = read_nvml()
HAS_NVIDIA_GPU = bool(_GPUS)


def test_missing_library_means_no_driver(tmp_path):
    driver, gpus = read_nvml(tmp_path / "libnvidia-ml.so.1")
    assert gpus == ()
    assert driver.available is False
    assert driver.error is not None and driver.error.startswith("no NVIDIA driver")
    assert "does not exist" in driver.error
    assert driver.driver_version is None and driver.cuda_driver_version is None


def test_unloadable_library_is_an_answer(tmp_path):
    fake = tmp_path / "libnvidia-ml.so.1"
    fake.write_text("not a library\n")
    driver, gpus = read_nvml(fake)
    assert gpus == ()
    assert driver.available is False
    assert driver.library == str(fake)
    assert driver.error is not None and driver.error.startswith("no NVIDIA driver")


def test_library_without_nvml_entry_points(nvrtc_libraries):
    # A real shared library that is not NVML: initialisation is reported, nothing raises.
    driver, gpus = read_nvml(nvrtc_libraries["12.6.77"])
    assert gpus == ()
    assert driver.available is False
    assert driver.error is not None and "did not initialise" in driver.error
    assert "nvmlInit" in driver.error


def test_this_machine_gives_an_answer():
    driver, gpus = read_nvml()
    if driver.available:
        assert driver.driver_version
        assert all(gpu.arch.startswith("sm_") and gpu.name for gpu in gpus)
    else:
        assert gpus == ()
        assert driver.error is not None
        assert driver.error.startswith(("no NVIDIA driver", "the NVIDIA driver did not"))


def test_default_names_per_os(monkeypatch):
    assert default_library_names("linux") == ("libnvidia-ml.so.1",)
    monkeypatch.setenv("SystemRoot", r"C:\Windows")
    names = default_library_names("win32")
    assert names[0] == "nvml.dll"
    assert any(name.endswith("nvml.dll") and "System32" in name for name in names)


# -- the GPU type -----------------------------------------------------------------------------


def test_gpu_from_capability_or_arch():
    gb10 = GPU(0, "NVIDIA GB10", capability=(12, 1))
    assert gb10.arch == "sm_121"
    assert GPU(0, "NVIDIA GB10", arch="121").capability == (12, 1)
    assert GPU(0, "NVIDIA GB10", arch="sm_121", capability=(12, 1)) == gb10
    assert GPU(1, "NVIDIA H100", arch="9.0").arch == "sm_90"
    assert gb10.label() == "sm_121 (NVIDIA GB10)"


def test_gpu_rejects_inconsistent_or_missing_arch():
    with pytest.raises(ValueError, match=r"does not match compute capability 12\.0"):
        GPU(0, "x", arch="sm_121", capability=(12, 0))
    with pytest.raises(ValueError, match="give arch or capability"):
        GPU(0, "x")
    with pytest.raises(ConfigError, match="not a GPU architecture"):
        GPU(0, "x", arch="blackwell")


def test_as_dicts_are_json_ready():
    gpu = GPU(0, "NVIDIA GB10", capability=(12, 1), uuid="GPU-1", pci_bus_id="0000:01:00.0")
    driver = DriverInfo(available=True, driver_version="580.95.05", cuda_driver_version=(13, 0))
    data = json.loads(json.dumps({"gpu": gpu.as_dict(), "driver": driver.as_dict()}))
    assert data["gpu"]["arch"] == "sm_121" and data["gpu"]["capability"] == [12, 1]
    assert data["driver"]["cuda_driver_version"] == "13.0"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_NVIDIA_GPU, reason="needs an NVIDIA GPU and driver")
def test_nvml_matches_torch_on_a_real_gpu():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    driver, gpus = read_nvml()
    assert driver.available and driver.driver_version and driver.cuda_driver_version
    assert len(gpus) >= torch.cuda.device_count()
    by_capability = {gpu.capability for gpu in gpus}
    for index in range(torch.cuda.device_count()):
        assert torch.cuda.get_device_capability(index) in by_capability
    assert all(gpu.uuid and gpu.uuid.startswith(("GPU-", "MIG-")) for gpu in gpus)
    assert all(gpu.pci_bus_id for gpu in gpus)
