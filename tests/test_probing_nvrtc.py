"""Reading real NVRTC libraries (12.6, 12.8, 12.9, 13.0) and broken ones."""

from __future__ import annotations

import ctypes
import os
import sys

import pytest

from blackwell_compat.errors import ConfigError
from blackwell_compat.probing import NvrtcInfo, read_nvrtc
from blackwell_compat.probing.nvrtc import read_loaded

OLD = ("sm_50", "sm_52", "sm_53", "sm_60", "sm_61", "sm_62", "sm_70", "sm_72")
AMPERE_HOPPER = ("sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90")

# Measured from the pip packages (tests/support/fetch_nvrtc.py): nvrtcVersion and
# nvrtcGetSupportedArchs.
EXPECTED: dict[str, tuple[tuple[int, int], tuple[str, ...]]] = {
    "12.6.77": ((12, 6), (*OLD, *AMPERE_HOPPER)),
    "12.8.93": ((12, 8), (*OLD, *AMPERE_HOPPER, "sm_100", "sm_101", "sm_120")),
    "12.9.86": (
        (12, 9),
        (*OLD, *AMPERE_HOPPER, "sm_100", "sm_101", "sm_103", "sm_120", "sm_121"),
    ),
    "13.0.88": (
        (13, 0),
        (
            "sm_75",
            "sm_80",
            "sm_86",
            "sm_87",
            "sm_88",
            "sm_89",
            "sm_90",
            "sm_100",
            "sm_103",
            "sm_110",
            "sm_120",
            "sm_121",
        ),
    ),
}

# Whether PyTorch's run-time compiled kernels fail: (RTX 50xx sm_120, GB10 sm_121, B300 sm_103).
FAILS: dict[str, tuple[bool, bool, bool]] = {
    "12.6.77": (True, True, True),
    "12.8.93": (False, True, True),
    "12.9.86": (False, False, False),
    "13.0.88": (False, False, False),
}


@pytest.mark.parametrize("version", sorted(EXPECTED))
def test_reads_true_version_and_archs(nvrtc_libraries, version):
    info = read_nvrtc(nvrtc_libraries[version])
    expected_version, expected_archs = EXPECTED[version]
    assert info.error is None
    assert info.path == nvrtc_libraries[version]
    assert info.version == expected_version
    assert info.supported_archs == expected_archs
    assert info.known
    assert info.version_string == f"{expected_version[0]}.{expected_version[1]}"


@pytest.mark.parametrize("version", sorted(FAILS))
def test_verdicts_for_blackwell_archs(nvrtc_libraries, version):
    info = read_nvrtc(nvrtc_libraries[version])
    sm120, sm121, sm103 = FAILS[version]
    assert info.jiterator_fails_for("sm_120") is sm120
    assert info.jiterator_fails_for("sm_121") is sm121
    assert info.jiterator_fails_for("sm_103") is sm103
    # Hopper and Ampere are listed by every one of them.
    assert info.jiterator_fails_for("sm_90") is False
    assert info.jiterator_fails_for("sm_86") is False


def test_arch_forms_are_normalised(nvrtc_libraries):
    info = read_nvrtc(nvrtc_libraries["12.8.93"])
    assert info.jiterator_fails_for("121") is True
    assert info.jiterator_fails_for("12.1") is True
    assert info.jiterator_fails_for("sm_121a") is True
    assert info.jiterator_fails_for("12.0") is False
    with pytest.raises(ConfigError, match="not a GPU architecture"):
        info.jiterator_fails_for("blackwell")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_library_is_unloaded_after_reading(nvrtc_libraries):
    path = os.path.realpath(nvrtc_libraries["12.9.86"])
    read_nvrtc(path)
    with open("/proc/self/maps", encoding="utf-8") as handle:
        assert path not in handle.read()


def test_text_file_named_like_nvrtc_is_a_clear_error(tmp_path):
    fake = tmp_path / "libnvrtc.so.12"
    fake.write_text("this is not a shared library\n")
    info = read_nvrtc(fake)
    assert info.path == str(fake)
    assert info.version is None
    assert info.supported_archs == ()
    assert info.error is not None
    assert "could not be loaded as a shared library" in info.error
    assert str(fake) in info.error
    assert info.jiterator_fails_for("sm_121") is False


def test_missing_file_and_folder_are_clear_errors(tmp_path):
    missing = read_nvrtc(tmp_path / "libnvrtc.so.13")
    assert missing.error == f"{tmp_path / 'libnvrtc.so.13'} does not exist"
    folder = read_nvrtc(tmp_path)
    assert folder.error is not None and "is a folder" in folder.error


def test_loadable_library_that_is_not_nvrtc(nvrtc_libraries):
    # The builtins library next to NVRTC loads fine but has none of NVRTC's entry points.
    folder = os.path.dirname(nvrtc_libraries["12.8.93"])
    builtins = os.path.join(folder, "libnvrtc-builtins.so.12.8")
    info = read_nvrtc(builtins)
    assert info.version is None
    assert info.error == f"{builtins} is not an NVRTC library: it has no nvrtcVersion entry point"


# -- libraries with only part of the API (NVRTC < 11.2 has no nvrtcGetSupportedArchs) -------------

_VERSION_FN = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)
)
_COUNT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int))


class _PartialNvrtc:
    """A C-callable stand-in exposing only ``nvrtcVersion`` (the shape of NVRTC 11.0/11.1)."""

    def __init__(self, major: int, minor: int, code: int = 0) -> None:
        def version(pmajor, pminor):  # type: ignore[no-untyped-def]
            pmajor[0], pminor[0] = major, minor
            return code

        self.nvrtcVersion = _VERSION_FN(version)


def test_nvrtc_without_supported_archs_entry_point():
    info = read_loaded(_PartialNvrtc(11, 1), "/opt/cuda-11.1/libnvrtc.so.11.1")
    assert info.version == (11, 1)
    assert info.supported_archs == ()
    assert info.error is not None and "nvrtcGetSupportedArchs appeared in CUDA 11.2" in info.error
    assert info.jiterator_fails_for("sm_121") is False


def test_failing_version_call_is_reported():
    info = read_loaded(_PartialNvrtc(0, 0, code=3), "/x/libnvrtc.so.12")
    assert info.version is None
    assert info.error is not None and "nvrtcVersion failed" in info.error
    assert "error code 3" in info.error


def test_failing_arch_count_is_reported():
    lib = _PartialNvrtc(12, 4)

    def count(pcount):  # type: ignore[no-untyped-def]
        pcount[0] = 0
        return 0

    lib.nvrtcGetNumSupportedArchs = _COUNT_FN(count)  # type: ignore[attr-defined]
    lib.nvrtcGetSupportedArchs = _COUNT_FN(lambda p: 0)  # type: ignore[attr-defined]
    info = read_loaded(lib, "/x/libnvrtc.so.12")
    assert info.version == (12, 4)
    assert info.error is not None and "reported 0 archs" in info.error
    assert info.jiterator_fails_for("sm_121") is False


# -- the rule itself ------------------------------------------------------------------------------


def test_rule_needs_a_known_version_of_at_least_11_8():
    archs = ("sm_80", "sm_86")
    assert NvrtcInfo(path="/x", version=(11, 8), supported_archs=archs).jiterator_fails_for("sm_90")
    assert not NvrtcInfo(path="/x", version=(11, 7), supported_archs=archs).jiterator_fails_for(
        "sm_90"
    )
    assert not NvrtcInfo(path="/x", version=None, supported_archs=archs).jiterator_fails_for(
        "sm_90"
    )
    assert not NvrtcInfo().jiterator_fails_for("sm_121")
    assert NvrtcInfo(path="/x", version=(12, 8)).supports("sm_121") is None


def test_as_dict_uses_dotted_version(nvrtc_libraries):
    data = read_nvrtc(nvrtc_libraries["12.8.93"]).as_dict()
    assert data["version"] == "12.8"
    assert data["supported_archs"][-1] == "sm_120"
    assert data["path"] == nvrtc_libraries["12.8.93"]
    assert data["error"] is None
