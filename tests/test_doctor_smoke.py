"""``doctor --smoke``: verdicts from runs, a hang as a failed result, and real runs on CPU
under emulation (the machinery proved on a machine without a GPU)."""

from __future__ import annotations

import pytest
from support.doctor_fakes import GB10, H100, machine

from blackwell_compat.doctor.facts import TorchFacts
from blackwell_compat.doctor.model import FAIL, PASS, SKIP, WARN
from blackwell_compat.doctor.runner import build_report
from blackwell_compat.doctor.smoke import (
    WORKLOADS,
    SmokeReport,
    SmokeRun,
    SmokeTarget,
    WorkloadResult,
    condense_error,
    fused_gate_function,
    run_smoke,
    run_workloads,
    targets_for,
)

NVRTC_ERROR = "RuntimeError: nvrtc: error: invalid value for --gpu-architecture (-arch)"
CUDA0 = SmokeTarget(device="cuda:0", label="cuda:0 NVIDIA GB10 (sm_121)")
EMULATED = SmokeTarget(device="cpu", label="CPU emulating sm_121", emulate="sm_121")


def run(target, mode, *statuses, error=None, applied=()):
    results = tuple(
        WorkloadResult(w.name, w.family, w.op, s, NVRTC_ERROR if s == FAIL else None)
        for w, s in zip(WORKLOADS, statuses, strict=False)
    )
    return SmokeRun(target, mode, results=results, error=error, applied=applied)


def verdict(*runs, targets=None):
    report = SmokeReport(runs=runs, targets=targets or tuple(dict.fromkeys(r.target for r in runs)))
    return build_report(machine([GB10], smoke=report)).check("smoke")


def test_gpu_that_works_unpatched_passes():
    check = verdict(run(CUDA0, "unpatched", PASS, PASS), run(CUDA0, "patched", PASS, PASS))
    assert check.status == PASS
    assert check.summary == "cuda:0 NVIDIA GB10 (sm_121): works"


def test_gpu_fixed_by_the_patches_warns_with_the_exact_error():
    check = verdict(
        run(CUDA0, "unpatched", FAIL, PASS),
        run(CUDA0, "patched", PASS, PASS, applied=("torch",)),
    )
    assert check.status == WARN
    assert "fails unpatched, patched works" in check.summary
    assert any(NVRTC_ERROR in line for line in check.details)
    assert any(", applied: torch" in line for line in check.details)


def test_gpu_failing_even_patched_fails():
    check = verdict(run(CUDA0, "unpatched", FAIL), run(CUDA0, "patched", FAIL))
    assert check.status == FAIL


def test_a_hung_run_fails():
    check = verdict(
        run(CUDA0, "unpatched", PASS),
        SmokeRun(CUDA0, "patched", error="timed out after 240 s (killed; it hung or was too slow)"),
    )
    assert check.status == FAIL
    assert any("timed out after 240 s" in line for line in check.details)


def test_emulation_must_reproduce_the_failure():
    good = verdict(run(EMULATED, "unpatched", FAIL, FAIL), run(EMULATED, "patched", PASS, PASS))
    assert good.status == PASS
    assert "failure reproduced, patches fix it" in good.summary
    silent = verdict(run(EMULATED, "unpatched", PASS, PASS), run(EMULATED, "patched", PASS, PASS))
    assert silent.status == FAIL
    assert "did not reproduce" in silent.summary


def test_nothing_to_run_is_skipped():
    report = SmokeReport(skipped="no CUDA device visible to torch")
    check = build_report(machine([], smoke=report)).check("smoke")
    assert check.status == SKIP


def test_targets_are_torch_devices_plus_the_emulated_cpu():
    from support.doctor_fakes import torch_cu128

    facts = machine([H100], emulated_arch="sm_121")
    targets = targets_for(facts.platform, torch_cu128([H100]))
    assert [t.device for t in targets] == ["cuda:0", "cpu"]
    assert targets[1].emulate == "sm_121"


def test_one_workload_per_inventory_family():
    from blackwell_compat.ops import inventory

    groups = {entry.group for entry in inventory.entries()}
    assert groups <= {w.family for w in WORKLOADS}, groups
    assert len({w.name for w in WORKLOADS}) == len(WORKLOADS)


def test_condense_error_keeps_the_nvrtc_line():
    source = "\n".join(["template <typename T>", "struct x {};"] * 50)
    exc = RuntimeError(f"{source}\nnvrtc: error: invalid value for --gpu-architecture (-arch)\n")
    assert condense_error(exc) == NVRTC_ERROR
    assert condense_error(ValueError("first\nsecond")) == "ValueError: first"


def test_no_torch_no_smoke():
    report = run_smoke([EMULATED], TorchFacts(installed=False), timeout=5)
    assert report.skipped == "torch is not installed"
    assert run_smoke([], TorchFacts(installed=True), timeout=5).skipped is not None


def test_a_child_that_runs_out_of_time_becomes_a_failed_result():
    torch = TorchFacts(installed=True)
    report = run_smoke([EMULATED], torch, timeout=0.5, only=["stft_abs"])
    assert [r.mode for r in report.runs] == ["unpatched", "patched"]
    for smoke_run in report.runs:
        assert smoke_run.error is not None and "timed out after 0.5 s" in smoke_run.error
    facts = machine([], emulated_arch="sm_121", smoke=report)
    assert build_report(facts).check("smoke").status == FAIL


@pytest.mark.slow
def test_real_workloads_on_cpu_under_emulation():
    """Unpatched, the Jiterator-bound workloads raise the NVRTC error; patched, they match the
    CPU reference."""
    torch = TorchFacts(installed=True)
    report = run_smoke([EMULATED], torch, timeout=600)
    plain, patched = report.runs
    assert plain.error is None, plain
    assert patched.error is None, patched
    ran = plain.ran
    assert ran, plain
    for result in ran:
        assert result.status == FAIL, result
        assert result.error is not None
        assert "invalid value for --gpu-architecture" in result.error, result
    for result in patched.ran:
        assert result.status == PASS, result
    assert "torch" in patched.applied
    facts = machine([], emulated_arch="sm_121", smoke=report)
    assert build_report(facts).check("smoke").status == PASS


# -- the fused TorchScript workload (issue 20) ------------------------------------------------


def test_the_fused_gate_runs_on_real_gpus_only():
    (workload,) = [w for w in WORKLOADS if w.name == "fused_gate"]
    assert workload.family == "fused" and workload.gpu_only
    record = run_workloads("cpu", "unpatched", None, only=["fused_gate"])
    (entry,) = record["results"]
    assert entry["status"] == SKIP and entry["error"] == "runs on a real GPU only"


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_the_fused_gate_is_fusible_and_equals_the_eager_gate():
    """What it compiles on a GPU, seen on the CPU with CPU fusion on as the stand-in; op by op
    (CPU fusion off, torch's default) it equals the eager gate bit for bit."""
    import torch

    a, b = torch.randn(4, 256), torch.randn(4, 256)
    eager = torch.tanh(a + b) * torch.sigmoid(a + b)
    assert torch.equal(fused_gate_function(torch)(a, b), eager)
    cpu, llvm = torch._C._jit_can_fuse_on_cpu(), torch._C._jit_get_te_must_use_llvm_cpu()
    torch._C._jit_override_can_fuse_on_cpu(True)
    torch._C._jit_set_te_must_use_llvm_cpu(False)
    try:
        gate = fused_gate_function(torch)
        for _ in range(5):
            out = gate(a, b)
        graph = gate.graph_for(a, b)
        kinds = [n.kind() for n in graph.findAllNodes("prim::TensorExprGroup", True)]
    finally:
        torch._C._jit_override_can_fuse_on_cpu(cpu)
        torch._C._jit_set_te_must_use_llvm_cpu(llvm)
    assert kinds == ["prim::TensorExprGroup"]
    torch.testing.assert_close(out, eager, rtol=1e-6, atol=1e-7)
