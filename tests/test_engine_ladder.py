"""The remedy ladder per GPU: ``engine.ladder()``, ``ApplyReport.gpus``, ``status()`` notes,
``evaluate`` and ``list``.  The NVRTC remedy's search runs for real (its candidates are tested
in child processes); the test process never loads a library (``plan`` only looks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support.environ import clean_env

import blackwell_compat as bc
from blackwell_compat import engine, state
from blackwell_compat.probing.locate import locate_torch
from blackwell_compat.remedies import nvrtc as remedy

MAJOR = locate_torch().cuda_major
CAPABLE = {12: "12.9.86", 13: "13.0.88"}
needs_cuda_torch = pytest.mark.skipif(
    MAJOR not in CAPABLE, reason="needs a CUDA 12 or 13 build of torch"
)


@pytest.fixture
def capable(nvrtc_libraries: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """BLACKWELL_COMPAT_NVRTC names a real NVRTC that lists sm_121 with torch's soname."""
    library = nvrtc_libraries[CAPABLE[MAJOR]]  # type: ignore[index]
    monkeypatch.setenv("BLACKWELL_COMPAT_NVRTC", library)
    return library


def test_no_gpu_no_rungs() -> None:
    assert engine.ladder() == ()
    assert engine.ladder(planned=True) == ()


@needs_cuda_torch
def test_planned_ladder_names_the_nvrtc_remedy_and_patches_stand_down(capable: str) -> None:
    with bc.emulate("sm_121"):
        (service,) = engine.ladder(planned=True)
        evaluation = engine.evaluate("torch")
    assert service.rung == engine.RUNG_NVRTC_REMEDY and service.arch == "sm_121"
    assert service.gpu == "emulated sm_121 (CPU tensors)"
    assert f"the NVRTC remedy would load NVRTC {CAPABLE[MAJOR][:4]} ({capable}" in service.why
    assert service.patches == ()
    assert service.fuser == "nothing to do: the NVRTC remedy compiles them (GPU fusion stays on)"
    # evaluate (list, the doctor) agrees: the op guard would not apply, and says why.
    assert evaluation.would_apply is False
    assert "nothing left for the patches" in evaluation.reason
    # Nothing was loaded into this process: plan only looks.
    assert remedy.state().status == remedy.INACTIVE
    assert state.nvrtc_served_archs == frozenset()


def test_without_the_remedy_the_patches_serve_and_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLACKWELL_COMPAT_NVRTC", "off")
    with bc.emulate("sm_121"):
        (planned,) = engine.ladder(planned=True)
        assert planned.rung == engine.RUNG_PATCHES and "torch" in planned.patches
        # Before apply() has run here, ladder() answers what apply() would do, and says so.
        (before,) = engine.ladder()
        assert before == planned and before.planned
        report = bc.apply(only=["torch"])
        (service,) = report.gpus
        statuses = {s.name: s for s in bc.status()}
    assert service.rung == engine.RUNG_PATCHES and service.patches == ("torch",)
    assert not service.planned
    assert "NVRTC remedy off" in service.why  # why the cheaper rung could not serve
    assert service.triton.startswith("nothing to do: the ptxas remedy serves real GPUs")
    assert str(service) in str(report)
    assert report.as_dict()["gpus"] == [service.as_dict()]
    ladder_notes = [n for n in statuses["torch"].notes if n.startswith("ladder: ")]
    assert ladder_notes == [f"ladder: {service}"]


def test_after_apply_an_unserved_gpu_says_no_patch_is_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BLACKWELL_COMPAT_NVRTC", "off")
    monkeypatch.setenv("BLACKWELL_COMPAT_DISABLE", "all")
    with bc.emulate("sm_121"):
        report = bc.apply()
        (service,) = engine.ladder()
    assert report.gpus == (service,)
    assert service.rung == engine.RUNG_UNSERVED and not service.planned
    assert "no patch is applied in this process" in service.why


def test_a_real_gpu_before_apply_says_why_triton_was_not_looked_at(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from blackwell_compat.probing import GPU, NvrtcInfo, build_platform

    monkeypatch.setenv("BLACKWELL_COMPAT_NVRTC", "off")
    gb10 = build_platform(
        gpus=[GPU(0, "NVIDIA GB10", capability=(12, 1))],
        nvrtc=NvrtcInfo(
            path="/x/libnvrtc.so.12", version=(12, 8), supported_archs=("sm_90", "sm_120")
        ),
    )
    (service,) = engine.ladder(gb10)
    assert service.planned and service.arch == "sm_121"
    assert service.triton.startswith("not checked yet: apply() tests the ptxas Triton would run")


def test_a_gpu_torch_serves_is_not_affected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from blackwell_compat.probing import GPU, NvrtcInfo, build_platform

    monkeypatch.setenv("BLACKWELL_COMPAT_NVRTC", "off")
    fine = build_platform(gpus=[GPU(0, "NVIDIA H100", capability=(9, 0))], nvrtc=NvrtcInfo())
    (service,) = engine.ladder(fine)
    assert service.rung == engine.RUNG_NOT_AFFECTED and service.gpu == "GPU 0 NVIDIA H100 (sm_90)"


@needs_cuda_torch
@pytest.mark.slow
def test_list_json_and_text_name_the_rung(capable: str) -> None:
    env = clean_env(
        BLACKWELL_COMPAT_NVRTC=capable,
        BLACKWELL_COMPAT_EMULATE="sm_121",
        BLACKWELL_COMPAT_CACHE_DIR=os.environ["BLACKWELL_COMPAT_CACHE_DIR"],
    )
    done = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    (gpu,) = data["gpus"]
    assert gpu["rung"] == "nvrtc-remedy" and capable in gpu["why"]
    assert gpu["fuser"] == "nothing to do: the NVRTC remedy compiles them (GPU fusion stays on)"
    (guard,) = [row for row in data["patches"] if row["name"] == "torch"]
    assert guard["would_apply"] is False
    text = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert "GPUs (the remedy ladder, cheapest rung first):" in text.stdout
    assert "* emulated sm_121 (CPU tensors): the NVRTC remedy (nothing patched)" in text.stdout
    assert "    fused TorchScript kernels: nothing to do: the NVRTC remedy compiles" in text.stdout
