"""The doctor's checks on fake machines (facts through the probe's injection points)."""

from __future__ import annotations

import pytest
from support.doctor_fakes import (
    CU124_ARCHS,
    GB10,
    H100,
    RTX5090,
    FakePatch,
    at,
    audio_for,
    broken_patch,
    fake_patches,
    machine,
    torch_cu128,
)

from blackwell_compat.doctor.checks import CHECKS, arch_coverage
from blackwell_compat.doctor.facts import TorchFacts
from blackwell_compat.doctor.model import FAIL, PASS, SKIP, WARN
from blackwell_compat.doctor.runner import build_report, run_checks
from blackwell_compat.probing import read_nvml, read_nvrtc


def statuses(report):
    return {c.id: c.status for c in report.checks}


# -- no driver / broken driver --------------------------------------------------------------


def test_no_driver_is_not_a_failure(tmp_path):
    driver, gpus = read_nvml(tmp_path / "absent" / "libnvidia-ml.so.1")
    assert not driver.available and gpus == ()
    report = build_report(machine(driver=driver, torch=torch_cu128(())))
    got = statuses(report)
    assert got["driver"] == SKIP
    assert got["gpus"] == SKIP
    assert report.exit_code == 0, [c.as_dict() for c in report.checks if c.status == FAIL]
    assert not report.affected


def test_unloadable_nvml_library_fails_with_the_loader_error(tmp_path):
    fake = tmp_path / "libnvidia-ml.so.1"
    fake.write_text("not a shared library\n")
    driver, _ = read_nvml(fake)
    assert not driver.available
    report = build_report(machine(driver=driver, torch=torch_cu128(())))
    check = report.check("driver")
    assert check.status == FAIL
    assert str(fake) in " ".join(check.details)
    assert "nvidia-smi" in check.commands
    assert report.exit_code == 1


def test_driver_older_than_torch_cuda_major_fails():
    from dataclasses import replace

    from support.doctor_fakes import DRIVER

    old = replace(DRIVER, driver_version="550.54", cuda_driver_version=(12, 4))
    facts = machine(
        [H100], driver=old, torch=torch_cu128([H100], version="2.11.0+cu130", cuda="13.0")
    )
    check = build_report(facts).check("driver")
    assert check.status == FAIL
    assert "CUDA 13.0" in " ".join(check.details)


# -- NVRTC verdicts with real NVRTC libraries -------------------------------------------------


def test_gb10_with_nvrtc_12_8_is_affected_and_hints_the_wheel(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    report = build_report(machine([GB10], nvrtc=nvrtc))
    check = report.check("nvrtc")
    assert report.affected
    assert check.status == FAIL
    assert "sm_121" in check.summary and "NVIDIA GB10" in check.summary
    assert "pip install nvidia-cuda-nvrtc-cu12==12.9.86" in check.commands
    # the second way out: the CUDA 13 build of the same torch, torchaudio included
    assert (
        'pip install --upgrade "torch>=2.9" torchaudio '
        "--index-url https://download.pytorch.org/whl/cu130"
    ) in check.commands
    assert "python -m blackwell_compat run -- python your_script.py" in check.commands
    assert "pip will report" in (check.hint or "")
    assert "in place of the NVRTC 12.8 wheel torch uses" in (check.hint or "")
    # precompiled kernels still cover sm_121 through sm_120 SASS
    assert report.check("torch").status == PASS
    assert report.exit_code == 1


def test_rtx5090_with_nvrtc_12_6_is_affected(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.6.77"])
    report = build_report(machine([RTX5090], nvrtc=nvrtc))
    check = report.check("nvrtc")
    assert check.status == FAIL
    assert "sm_120" in check.summary
    assert "pip install nvidia-cuda-nvrtc-cu12==12.9.86" in check.commands


def test_rtx5090_with_nvrtc_12_8_is_fine(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    report = build_report(machine([RTX5090], nvrtc=nvrtc))
    assert not report.affected
    assert report.check("nvrtc").status == PASS
    assert report.check("nvrtc").commands == ()
    assert report.exit_code == 0, [c.as_dict() for c in report.checks if c.status == FAIL]


def test_h100_is_fine(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    report = build_report(machine([H100], nvrtc=nvrtc))
    assert statuses(report)["nvrtc"] == PASS
    assert "sm_90 (NVIDIA H100 80GB HBM3): Jiterator compiles" in report.check("nvrtc").details
    assert report.exit_code == 0


def test_mixed_machine_names_only_the_affected_gpu(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    gpus = [at(H100, 0), at(GB10, 1)]
    report = build_report(machine(gpus, nvrtc=nvrtc))
    check = report.check("nvrtc")
    assert check.status == FAIL
    assert "sm_121" in check.summary and "sm_90" not in check.summary
    details = "\n".join(check.details)
    assert "sm_90 (NVIDIA H100 80GB HBM3): Jiterator compiles" in details
    assert "sm_121 (NVIDIA GB10): Jiterator FAILS" in details
    assert "2 GPUs" in report.check("gpus").summary


def test_cuda13_stack_is_fine_for_every_blackwell_arch(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["13.0.88"])
    torch = torch_cu128([GB10], version="2.11.0+cu130", cuda="13.0")
    report = build_report(machine([GB10], nvrtc=nvrtc, torch=torch))
    assert report.check("nvrtc").status == PASS


def test_cuda13_torch_missing_arch_hints_the_cu13_wheel():
    from blackwell_compat.probing import NvrtcInfo

    nvrtc = NvrtcInfo(
        path="/venv/nvidia/cu13/lib/libnvrtc.so.13",
        version=(13, 0),
        supported_archs=("sm_90", "sm_100", "sm_120"),
        source="fake",
    )
    torch = torch_cu128([GB10], version="2.11.0+cu130", cuda="13.0")
    check = build_report(machine([GB10], nvrtc=nvrtc, torch=torch)).check("nvrtc")
    assert check.status == FAIL
    assert "pip install --upgrade nvidia-cuda-nvrtc" in check.commands


def test_no_gpu_reports_what_a_blackwell_gpu_would_get(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    check = build_report(machine([], nvrtc=nvrtc, torch=torch_cu128(()))).check("nvrtc")
    assert check.status == PASS
    assert any("sm_100 yes, sm_103 no, sm_120 yes, sm_121 no" in line for line in check.details), (
        check.details
    )


def test_unreadable_nvrtc_is_a_warning_with_gpus(tmp_path):
    broken = tmp_path / "libnvrtc.so.12"
    broken.write_text("junk")
    nvrtc = read_nvrtc(broken)
    check = build_report(machine([GB10], nvrtc=nvrtc)).check("nvrtc")
    assert check.status == WARN
    assert "cannot tell" in check.summary


def test_torch_mapping_another_nvrtc_is_reported(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    torch = torch_cu128([H100], loaded_nvrtc=(nvrtc_libraries["12.6.77"],))
    check = build_report(machine([H100], nvrtc=nvrtc, torch=torch)).check("nvrtc")
    assert check.status == WARN
    assert any(nvrtc_libraries["12.6.77"] in d for d in check.details)


# -- torch ------------------------------------------------------------------------------------


def test_torch_whose_arch_list_lacks_the_gpu_fails_with_no_kernel_image(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.6.77"])
    torch = torch_cu128([GB10], version="2.6.0+cu124", cuda="12.4", arch_list=CU124_ARCHS)
    report = build_report(machine([GB10], nvrtc=nvrtc, torch=torch))
    check = report.check("torch")
    assert check.status == FAIL
    assert any("no kernel image is available" in d for d in check.details)
    assert any("--index-url https://download.pytorch.org/whl/cu130" in c for c in check.commands)


def test_torch_that_cannot_be_imported_fails():
    torch = TorchFacts(installed=True, version="2.8.0", error="import torch failed: OSError: x")
    check = build_report(machine([GB10], torch=torch)).check("torch")
    assert check.status == FAIL
    assert "import torch failed" in check.details[0]


def test_torch_blind_to_the_gpu_fails():
    torch = torch_cu128([GB10], cuda_available=False, devices=(), cuda_error="no CUDA GPUs")
    assert build_report(machine([GB10], torch=torch)).check("torch").status == FAIL


def test_cpu_only_torch_with_gpu_warns_and_skips_nvrtc():
    torch = TorchFacts(installed=True, version="2.11.0+cpu", arch_list=())
    report = build_report(machine([GB10], torch=torch))
    assert report.check("torch").status == WARN
    assert report.check("nvrtc").status == SKIP


def test_torch_not_installed_skips():
    torch = TorchFacts(installed=False)
    audio = audio_for(torch, installed=False, version=None)
    report = build_report(machine([], torch=torch, torchaudio=audio))
    assert statuses(report)["torch"] == SKIP
    assert statuses(report)["torchaudio"] == SKIP


@pytest.mark.parametrize(
    ("arch", "archs", "expected"),
    [
        ("sm_121", ("sm_90", "sm_120"), ("sass", "sm_120")),
        ("sm_120", ("sm_90", "sm_120"), ("sass", "sm_120")),
        ("sm_103", ("sm_90", "sm_100"), ("sass", "sm_100")),
        ("sm_121", ("sm_90", "sm_90a"), ("none", None)),
        ("sm_121", ("sm_90", "compute_90"), ("ptx", "compute_90")),
        ("sm_90", ("sm_90a",), ("sass", "sm_90a")),
        ("sm_100", ("sm_90a", "sm_120"), ("none", None)),
        ("sm_86", ("sm_80", "sm_86", "compute_86"), ("sass", "sm_86")),
    ],
)
def test_arch_coverage(arch, archs, expected):
    assert arch_coverage(arch, archs) == expected


@pytest.mark.parametrize("gpus", [[], [H100]])
def test_nvrtc_that_crashed_its_test_process_fails_with_a_reinstall_hint(gpus):
    # Issue 14, point 1: a broken NVRTC is a failed result with its path and what happened.
    from blackwell_compat.probing import NvrtcInfo

    path = "/venv/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"
    what = "was killed by signal 7 (SIGBUS) while loading " + path
    nvrtc = NvrtcInfo(
        path=path,
        source="torch preload",
        error=f"NVRTC at {path} is unusable: a test process that loaded it {what}",
        crash=what,
    )
    check = build_report(machine(gpus, nvrtc=nvrtc)).check("nvrtc")
    assert check.status == FAIL
    assert "is broken" in check.summary and path in check.summary and "SIGBUS" in check.summary
    assert any(
        c.startswith("pip install --force-reinstall --no-deps nvidia-cuda-nvrtc-cu12")
        for c in check.commands
    )


# -- torchaudio -------------------------------------------------------------------------------


def test_torchaudio_that_does_not_load_fails_with_matching_build_hint():
    torch = torch_cu128([H100])
    audio = audio_for(torch, native_loaded=False, error="OSError: undefined symbol: _ZN3c10")
    check = build_report(machine([H100], torch=torch, torchaudio=audio)).check("torchaudio")
    assert check.status == FAIL
    assert any(
        "torchaudio==2.8.0 --index-url https://download.pytorch.org/whl/cu128" in c
        for c in check.commands
    )


def test_torchaudio_not_reached_by_a_crashed_torch_child_is_not_called_broken(monkeypatch):
    # Issue 14, point 16: the torch child died first; torchaudio was never tried.
    from blackwell_compat import versions
    from blackwell_compat.doctor.facts import stack_facts_from
    from blackwell_compat.doctor.process import ChildResult

    installed = {"torch": "2.8.0", "torchaudio": "2.8.0"}
    monkeypatch.setattr(versions, "installed_version", installed.get)
    crashed = ChildResult(
        argv=("python",), returncode=-11, timed_out=False, seconds=1.0, error="killed by signal 11"
    )
    torch, audio = stack_facts_from(crashed)
    assert audio.installed and audio.tried is False
    report = build_report(machine([H100], torch=torch, torchaudio=audio))
    check = report.check("torchaudio")
    assert check.status == WARN
    assert "was not checked" in check.summary and "does not load" not in check.summary
    assert "killed by signal 11" in " ".join(check.details)
    assert report.check("torch").status == FAIL


def test_cpu_only_torchaudio_on_aarch64_warns():
    torch = torch_cu128([GB10])
    audio = audio_for(torch, cpu_only=True, cuda_version=None, version="2.8.0")
    check = build_report(machine([GB10], torch=torch, torchaudio=audio)).check("torchaudio")
    assert check.status == WARN
    assert "CPU-only" in check.summary
    assert "aarch64" in " ".join(check.details)


def test_torchaudio_for_another_torch_warns():
    torch = torch_cu128([H100])
    audio = audio_for(torch, version="2.7.1+cu128")
    check = build_report(machine([H100], torch=torch, torchaudio=audio)).check("torchaudio")
    assert check.status == WARN


# -- triton -----------------------------------------------------------------------------------


def test_ptxas_rejecting_the_gpu_fails_and_points_at_an_alternative():
    from blackwell_compat.probing.ptxas import PtxasProbe, TritonFacts

    old = PtxasProbe(
        path="/venv/triton/backends/nvidia/bin/ptxas",
        role="ptxas",
        source="bundled with triton",
        version="12.8",
        accepts={"sm_121a": False},
        errors={"sm_121a": "ptxas fatal   : Value 'sm_121a' is not defined for option 'gpu-name'"},
    )
    new = PtxasProbe(
        path="/usr/local/cuda-13.0/bin/ptxas",
        role="ptxas",
        source="found on this machine",
        version="13.0",
        accepts={"sm_121a": True},
    )
    triton = TritonFacts(
        installed=True, version="3.3.1", tools=(old,), uses={"sm_121": "ptxas"}, alternatives=(new,)
    )
    check = build_report(machine([GB10], triton=triton)).check("triton")
    assert check.status == FAIL
    assert "export TRITON_PTXAS_PATH=/usr/local/cuda-13.0/bin/ptxas" in check.commands
    assert any("is not defined for option 'gpu-name'" in d for d in check.details)


def test_ptxas_rejecting_without_alternative_hints_the_nvcc_wheel():
    from blackwell_compat.probing.ptxas import PtxasProbe, TritonFacts

    old = PtxasProbe(
        path="/t/ptxas-blackwell",
        role="ptxas-blackwell",
        source="bundled with triton",
        version="12.8",
        accepts={"sm_121a": False},
    )
    triton = TritonFacts(
        installed=True, version="3.5.0", tools=(old,), uses={"sm_121": "ptxas-blackwell"}
    )
    check = build_report(machine([GB10], triton=triton)).check("triton")
    assert check.status == FAIL
    assert "python -m blackwell_compat fetch ptxas" in check.commands
    assert "TRITON_PTXAS_BLACKWELL_PATH" in check.hint


def test_triton_missing_is_skipped():
    from blackwell_compat.probing.ptxas import TritonFacts

    check = build_report(machine([H100], triton=TritonFacts(installed=False))).check("triton")
    assert check.status == SKIP


# -- patches ----------------------------------------------------------------------------------


def test_patches_would_apply_only_where_affected(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    affected = build_report(machine([GB10], nvrtc=nvrtc)).check("patches")
    fine = build_report(machine([H100], nvrtc=nvrtc)).check("patches")
    assert "would apply here: torch, torchaudio" in affected.summary
    assert "would apply here: none" in fine.summary
    assert "python -m blackwell_compat run -- python your_script.py" in affected.commands
    assert fine.commands == ()


def test_patches_applied_in_this_process_are_named(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    rows = fake_patches(torchaudio_version=None)
    rows[0].state = "applied"
    check = build_report(machine([GB10], nvrtc=nvrtc, patches=rows)).check("patches")
    assert check.summary.endswith("applied in this process: torch")
    assert "torch: torch 2.8.0 (supports >=2.6): would apply; in this process: applied" in (
        check.details
    )
    assert "torchaudio: torchaudio not installed (supports >=2.6,<2.12)" in check.details
    assert check.commands == ()  # already applied: no need to say how


def test_patch_outside_its_range_warns_on_an_affected_machine(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    rows = fake_patches(torchaudio_version="2.13.0")
    check = build_report(machine([GB10], nvrtc=nvrtc, patches=rows)).check("patches")
    assert check.status == WARN
    assert "torchaudio 2.13.0" in " ".join(check.details)


def test_patch_that_failed_to_load_fails():
    rows = fake_patches()
    rows.append(broken_patch("broken", "thirdparty", "failed to load: ImportError: nope"))
    check = build_report(machine([H100], patches=rows)).check("patches")
    assert check.status == FAIL
    assert any("ImportError: nope" in d for d in check.details)


def test_patch_rows_read_live_from_the_registry():
    facts = machine([H100], patches=None)
    from dataclasses import replace

    check = build_report(replace(facts, patches=None)).check("patches")
    from blackwell_compat.engine import registrations

    assert check.summary.startswith(f"{len(registrations())} known")


# -- environment ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"BLACKWELL_COMPAT_AUTO": "maybe"}, "BLACKWELL_COMPAT_AUTO='maybe' is not a boolean"),
        ({"BLACKWELL_COMPAT_EMULATE": "gb10"}, "'gb10' is not a GPU architecture"),
        ({"BLACKWELL_COMPAT_DISABLE": "torch,nosuch"}, "unknown patch name(s) 'nosuch'"),
        ({"BLACKWELL_COMPAT_STRATEGY": "torchaudio"}, "is malformed"),
        ({"BLACKWELL_COMPAT_STRATEGY": "torchaudio=fast"}, "has no strategy 'fast'"),
    ],
)
def test_malformed_variables_fail_with_the_exact_problem(env, needle):
    check = build_report(machine([H100], env=env)).check("environment")
    assert check.status == FAIL
    assert needle in check.summary or any(needle in d for d in check.details), check


def test_valid_variables_are_listed():
    env = {
        "BLACKWELL_COMPAT_DISABLE": "torchaudio",
        "BLACKWELL_COMPAT_STRATEGY": "torchaudio=cpu",
        "TRITON_PTXAS_PATH": "/opt/ptxas",
    }
    check = build_report(machine([H100], env=env)).check("environment")
    assert check.status == PASS
    text = "\n".join(check.details)
    assert "disables torchaudio" in text and "torchaudio uses cpu" in text
    assert "TRITON_PTXAS_PATH='/opt/ptxas'" in text


def test_environment_check_judges_as_the_command_line_does():
    """One rule (config.environment_problems): a probe timeout and a cache folder are not
    booleans (the doctor called ``BLACKWELL_COMPAT_PROBE_TIMEOUT=20`` invalid before)."""
    from blackwell_compat import config

    env = {
        "BLACKWELL_COMPAT_PROBE_TIMEOUT": "20",
        "BLACKWELL_COMPAT_CACHE_DIR": "/tmp/bc-cache",
        "BLACKWELL_COMPAT_FORCE": "yes",
    }
    check = build_report(machine([H100], env=env)).check("environment")
    assert check.status == PASS, check
    text = "\n".join(check.details)
    assert "probe timeout 20 s" in text and "cache folder /tmp/bc-cache" in text
    assert "BLACKWELL_COMPAT_FORCE='yes': on" in text
    bad = {"BLACKWELL_COMPAT_PROBE_TIMEOUT": "soon", "BLACKWELL_COMPAT_AUTO": "maybe"}
    check = build_report(machine([H100], env=bad)).check("environment")
    problems = config.environment_problems({"torch": (), "torchaudio": ("real", "cpu")}, bad)
    assert check.status == FAIL and len(problems) == 2
    for problem in problems:
        assert any(problem in line and "INVALID" in line for line in check.details)


# -- emulation --------------------------------------------------------------------------------


def test_emulated_gb10_is_affected_with_patches_and_hints(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["13.0.88"])
    torch = torch_cu128((), version="2.11.0+cu130", cuda="13.0")
    facts = machine(
        [],
        nvrtc=nvrtc,
        torch=torch,
        emulated_arch="sm_121",
        env={"BLACKWELL_COMPAT_EMULATE": "sm_121"},
    )
    report = build_report(facts)
    assert report.affected
    nvrtc_check = report.check("nvrtc")
    assert nvrtc_check.status == FAIL
    assert nvrtc_check.summary.startswith("AFFECTED (emulated): emulated sm_121")
    assert (
        "this machine's NVRTC 13.0 lists sm_121, so a real one would be fine" in nvrtc_check.summary
    )
    assert not nvrtc_check.summary.endswith(": emulated")  # the old, puzzling wording
    assert "Emulation only" in (nvrtc_check.hint or "")
    assert "python -m blackwell_compat run -- python your_script.py" in nvrtc_check.commands
    assert "would apply here: torch, torchaudio" in report.check("patches").summary
    assert report.check("environment").status == WARN
    assert report.exit_code == 1


def test_emulated_arch_that_the_real_nvrtc_lacks_gets_the_real_fix(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    facts = machine([], nvrtc=nvrtc, torch=torch_cu128(()), emulated_arch="sm_121")
    check = build_report(facts).check("nvrtc")
    assert "a real sm_121 GPU would fail here too" in (check.hint or "")
    assert "pip install nvidia-cuda-nvrtc-cu12==12.9.86" in check.commands


# -- robustness -------------------------------------------------------------------------------


def test_a_raising_check_becomes_a_fail_result_and_the_others_run():
    def explode(facts):
        raise RuntimeError("boom")

    checks = [CHECKS[0], ("exploding", "Exploding", explode), *CHECKS[1:]]
    results = run_checks(machine([H100]), checks)
    assert [r.id for r in results] == [c[0] for c in checks]
    bad = results[1]
    assert bad.status == FAIL
    assert "RuntimeError: boom" in bad.summary
    assert all(r.status in (PASS, WARN, FAIL, SKIP) for r in results)
    assert sum(1 for r in results if r.status == FAIL) == 1


def test_facts_that_break_a_check_do_not_stop_the_report():
    # a value no environment can hold makes the environment check raise inside
    torch = torch_cu128([H100], arch_list=("sm_90",))
    facts = machine([H100], torch=torch, env={"BLACKWELL_COMPAT_DISABLE": object()})  # type: ignore[dict-item]
    report = build_report(facts)
    assert report.check("environment").status == FAIL
    assert report.check("torch").status == PASS


def test_unknown_status_is_refused():
    from blackwell_compat.doctor.model import CheckResult

    with pytest.raises(ValueError, match="status 'ok'"):
        CheckResult(id="x", title="X", status="ok", summary="")


def test_smoke_not_requested_is_skipped():
    assert build_report(machine([H100])).check("smoke").status == SKIP


def test_the_patches_check_asks_the_engine_not_the_command_line():
    """Layers: the doctor sits below the CLI (it read ``cli.list_cmd.rows`` before)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from blackwell_compat.doctor.checks.patches import check_patches\n"
        "from blackwell_compat.doctor.facts import Facts, TorchaudioFacts, TorchFacts\n"
        "from blackwell_compat.probing.ptxas import TritonFacts\n"
        "from blackwell_compat.probing import build_platform\n"
        "facts = Facts(platform=build_platform(), torch=TorchFacts(installed=False),\n"
        "              torchaudio=TorchaudioFacts(installed=False),\n"
        "              triton=TritonFacts(installed=False))\n"
        "result = check_patches(facts)\n"
        "print(result.summary.split(';')[0])\n"
        "print(sorted(m for m in sys.modules if m.startswith('blackwell_compat.cli')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    known, cli_modules = out.stdout.splitlines()[-2:]
    from blackwell_compat.engine import registrations

    assert known == f"{len(registrations())} known"
    assert cli_modules == "[]"


# -- the remedy ladder: the NVRTC remedy comes first ---------------------------------------------


def test_the_first_way_out_is_the_nvrtc_remedy_fetch_when_none_is_found(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    check = build_report(machine([GB10], nvrtc=nvrtc)).check("nvrtc")
    assert check.commands[:2] == (
        "python -m blackwell_compat fetch nvrtc",
        "python -m blackwell_compat run -- python your_script.py",
    )
    assert "without changing your environment" in (check.hint or "")


def test_a_capable_nvrtc_the_remedy_found_is_named_first(nvrtc_libraries):
    from blackwell_compat.remedies.nvrtc import AVAILABLE, RemedyState

    library = nvrtc_libraries["12.9.86"]
    found = RemedyState(
        status=AVAILABLE,
        reason="found",
        needed=("sm_121",),
        library=library,
        version="12.9",
        archs=frozenset({"sm_120", "sm_121"}),
        origin="the project's cache",
    )
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    check = build_report(machine([GB10], nvrtc=nvrtc, remedy=found)).check("nvrtc")
    # Issue 22: torch's own NVRTC lacks the arch, but the remedy will serve it: a warning whose
    # one step is to run through the remedy, not a plain failure that says "fetch" again.
    assert check.status == WARN
    assert check.summary.endswith(
        f"the NVRTC remedy will serve it with NVRTC 12.9 at {library} (the project's cache)"
    )
    assert check.commands == ("python -m blackwell_compat run -- python your_script.py",)
    assert "fetch nvrtc" not in (check.hint or "")
    assert f"found a capable NVRTC: NVRTC 12.9 at {library}" in (check.hint or "")
    assert any(
        line.startswith("remedy ladder: the NVRTC remedy would load NVRTC 12.9")
        for line in check.details
    )


# -- issue 22: right after every step ----------------------------------------------------------


def _old_triton(version: str):
    """Triton whose bundled ptxas 12.4 rejects sm_121a, with a capable CUDA 13.0 ptxas found
    on the machine (as on the oldest stack: torch 2.6 brings triton 3.2)."""
    from blackwell_compat.probing.ptxas import PtxasProbe, TritonFacts, triton_location

    bundled = PtxasProbe(
        path="/venv/triton/backends/nvidia/bin/ptxas",
        role="ptxas",
        source="bundled with triton",
        version="12.4",
        accepts={"sm_121a": False},
        errors={"sm_121a": "ptxas fatal   : Value 'sm_121a' is not defined for option 'gpu-name'"},
    )
    toolkit = PtxasProbe(
        path="/usr/local/cuda-13.0/bin/ptxas",
        role="ptxas",
        source="found on this machine",
        version="13.0",
        accepts={"sm_121a": True},
    )
    return TritonFacts(
        installed=True,
        version=version,
        location=triton_location(),
        tools=(bundled,),
        uses={"sm_121": "ptxas"},
        alternatives=(toolkit,),
    )


REFUSED = (
    "this triton refuses ptxas {0}: "
    "Triton only support CUDA 10.0 or higher, but got CUDA version: {0}"
)


def test_a_triton_that_refuses_every_capable_ptxas_is_told_to_upgrade_not_given_a_variable():
    # Triton 3.2 (torch 2.6's) refuses any ptxas newer than 12.6; sm_121a needs 12.9+.
    releases = {r: (False, REFUSED.format(r)) for r in ("13.0", "12.9")}
    facts = machine(
        [GB10],
        triton=_old_triton("3.2.0"),
        ptxas_releases=releases,
        ptxas_fetch_release="12.9",
    )
    check = build_report(facts).check("triton")
    assert check.status == FAIL
    assert not any("TRITON_PTXAS" in c or "fetch ptxas" in c for c in check.commands)
    assert (check.hint or "").startswith("Upgrade Triton: triton 3.2.0 refuses ptxas 12.9")
    assert any(c.startswith("pip install --upgrade") for c in check.commands)
    assert f"triton 3.2.0: {REFUSED.format('13.0')}" in check.details


def test_a_capable_ptxas_the_triton_accepts_is_still_advised():
    releases = {"13.0": (True, "ok"), "12.9": (True, "ok")}
    facts = machine([GB10], triton=_old_triton("3.6.0"), ptxas_releases=releases)
    check = build_report(facts).check("triton")
    assert check.commands == ("export TRITON_PTXAS_PATH=/usr/local/cuda-13.0/bin/ptxas",)


@pytest.mark.slow
def test_the_triton_advice_follows_what_the_installed_triton_answers():
    # The gate asked of the real Triton of this stack: triton 3.2 (torch 2.6) refuses 12.9 and
    # 13.0, so the advice is an upgrade; triton 3.6 (torch 2.11) takes them, so a variable.
    from blackwell_compat.probing.ptxas import triton_location
    from blackwell_compat.remedies.ptxas import triton_accepts_release
    from blackwell_compat.versions import installed_version

    location = triton_location()
    assert location is not None, "every torch session installs torch's triton"
    releases = {r: triton_accepts_release(location, r) for r in ("13.0", "12.9")}
    version = installed_version("triton") or "?"
    facts = machine(
        [GB10],
        triton=_old_triton(version),
        ptxas_releases=releases,
        ptxas_fetch_release="12.9",
    )
    check = build_report(facts).check("triton")
    if version.startswith("3.2."):
        assert releases["12.9"][0] is False and releases["13.0"][0] is False, releases
        assert (check.hint or "").startswith(f"Upgrade Triton: triton {version}")
        assert not any("TRITON_PTXAS" in c for c in check.commands)
    else:
        assert releases["13.0"] == (True, "ok"), releases
        assert "export TRITON_PTXAS_PATH=/usr/local/cuda-13.0/bin/ptxas" in check.commands


def _torch26(gpus):
    return torch_cu128(gpus, version="2.6.0+cu124", cuda="12.4", arch_list=CU124_ARCHS)


def test_a_torch_without_kernels_for_the_gpu_is_the_first_failure_and_first_fix(
    nvrtc_libraries,
):
    # A real GB10 with torch 2.6+cu124: no sm_12x kernels, every op fails whatever NVRTC.
    nvrtc = read_nvrtc(nvrtc_libraries["12.6.77"])
    report = build_report(machine([GB10], nvrtc=nvrtc, torch=_torch26([GB10])))
    failed = [c.id for c in report.checks if c.status == FAIL]
    assert failed[0] == "torch", failed
    hinted = [c.id for c in report.checks if c.hint and c.status in (FAIL, WARN)]
    assert hinted[0] == "torch"
    assert "torch>=2.9" in report.check("torch").commands[0]
    nvrtc_check = report.check("nvrtc")
    assert (nvrtc_check.hint or "").startswith("First fix PyTorch (above)")
    # No NVRTC reinstall is offered for a torch that cannot run on the GPU at all.
    assert not any("nvidia-cuda-nvrtc" in c for c in nvrtc_check.commands)


def test_the_same_torch_under_emulation_fails_the_same_way():
    report = build_report(
        machine(
            [],
            torch=_torch26([]),
            emulated_arch="sm_121",
            env={"BLACKWELL_COMPAT_EMULATE": "sm_121"},
        )
    )
    torch_check = report.check("torch")
    assert torch_check.status == FAIL
    assert torch_check.data["emulated_only"] is True
    assert any("every CUDA op fails on a real sm_121 GPU" in d for d in torch_check.details)


def test_after_fetch_nvrtc_the_cached_library_serves_and_patches_wait(nvrtc_libraries):
    from blackwell_compat.remedies.nvrtc import AVAILABLE, RemedyState

    library = nvrtc_libraries["12.9.86"]
    cached = RemedyState(
        status=AVAILABLE,
        reason="found",
        needed=("sm_121",),
        library=library,
        version="12.9",
        archs=frozenset({"sm_120", "sm_121"}),
        origin="the project's cache (/cache/compilers/nvrtc/cu12/12.9.86)",
    )
    report = build_report(
        machine(
            [],
            nvrtc=read_nvrtc(nvrtc_libraries["12.6.77"]),
            torch=_torch26([]),
            emulated_arch="sm_121",
            env={"BLACKWELL_COMPAT_EMULATE": "sm_121"},
            remedy=cached,
        )
    )
    nvrtc_check = report.check("nvrtc")
    assert nvrtc_check.status == WARN
    assert "the NVRTC remedy will serve it with NVRTC 12.9 at" in nvrtc_check.summary
    assert nvrtc_check.commands == ("python -m blackwell_compat run -- python your_script.py",)
    assert "BLACKWELL_COMPAT_AUTO=1" in (nvrtc_check.hint or "")
    assert "blackwell_compat.apply()" in (nvrtc_check.hint or "")


# -- fused TorchScript kernels (issue 20): named among what fails, the fuser rung per GPU -------


def _with_fuser(torch_version: str = "2.11.0") -> list[FakePatch]:
    from blackwell_compat.patches.fuser import FuserPatch
    from blackwell_compat.registry import Registration

    fuser = FakePatch(
        Registration("fuser", "fake:Fuser", "blackwell-compat", FuserPatch()),
        {"torch": torch_version},
    )
    return [*fake_patches(torch_version), fuser]


def _unavailable() -> object:
    from blackwell_compat.remedies.nvrtc import UNAVAILABLE, RemedyState

    return RemedyState(status=UNAVAILABLE, reason="no NVRTC lists sm_121", needed=("sm_121",))


def test_fused_kernels_are_named_and_the_fuser_rung_serves_them(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    facts = machine([GB10], nvrtc=nvrtc, remedy=_unavailable(), patches=_with_fuser())
    check = build_report(facts).check("nvrtc")
    assert check.status == FAIL
    (failing,) = [line for line in check.details if line.startswith("ops that fail:")]
    assert failing.endswith(
        "and fused TorchScript kernels (elementwise chains of @torch.jit.script functions, "
        "compiled after their first calls)"
    )
    (fused,) = [line for line in check.details if line.startswith("fused TorchScript kernels on")]
    assert fused == (
        "fused TorchScript kernels on GPU 0 NVIDIA GB10 (sm_121): the fuser rung would turn GPU "
        "fusion off at apply() (torch._C._jit_override_can_fuse_on_gpu(False)); fused kernels "
        "run op by op; see benchmarks/bench_fuser.py"
    )
    (service,) = check.data["ladder"]
    assert service["rung"] == "patches" and "fuser" in service["patches"]
    assert service["why"] == "NVRTC remedy unavailable: no NVRTC lists sm_121"
    # The remedy first, then what the route around NVRTC costs scripted functions.
    hint = check.hint or ""
    assert hint.index("give torch a capable NVRTC") < hint.index("route PyTorch's run-time")
    assert "(it compiles fused TorchScript kernels too)" in hint
    assert (
        "What it costs TorchScript: the fuser rung turns GPU fusion off, so fused kernels run op "
        "by op; see benchmarks/bench_fuser.py"
    ) in " ".join(hint.split())


def test_fused_kernels_keep_their_fusion_where_the_remedy_serves(nvrtc_libraries):
    from blackwell_compat.remedies.nvrtc import AVAILABLE, RemedyState

    found = RemedyState(
        status=AVAILABLE,
        reason="found",
        needed=("sm_121",),
        library=nvrtc_libraries["12.9.86"],
        version="12.9",
        archs=frozenset({"sm_120", "sm_121"}),
        origin="the project's cache",
    )
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    check = build_report(machine([GB10], nvrtc=nvrtc, remedy=found, patches=_with_fuser())).check(
        "nvrtc"
    )
    assert (
        "fused TorchScript kernels on GPU 0 NVIDIA GB10 (sm_121): nothing to do: the NVRTC "
        "remedy compiles them (GPU fusion stays on)"
    ) in check.details
    assert "compiles with it, fused TorchScript kernels included" in " ".join(
        (check.hint or "").split()
    )


def test_fused_kernels_unserved_where_the_fuser_patch_is_outside_its_range(nvrtc_libraries):
    nvrtc = read_nvrtc(nvrtc_libraries["12.8.93"])
    facts = machine(
        [GB10], nvrtc=nvrtc, remedy=_unavailable(), patches=_with_fuser(torch_version="2.16.0")
    )
    check = build_report(facts).check("nvrtc")
    (fused,) = [line for line in check.details if line.startswith("fused TorchScript kernels on")]
    assert "NOT SERVED: fused kernels compile with torch's NVRTC and fail" in fused
