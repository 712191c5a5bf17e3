"""``list``: its rows are the engine's evaluations (one answer to "would it apply here?")."""

from __future__ import annotations

from blackwell_compat import engine
from blackwell_compat.cli import list_cmd


def test_rows_are_the_engines_evaluations(monkeypatch):
    monkeypatch.setenv("BLACKWELL_COMPAT_DISABLE", "torch")
    rows = {row["name"]: row for row in list_cmd.rows()}
    evaluations = {e.name: e for e in engine.evaluate_all()}
    assert set(rows) == set(evaluations)
    for name, row in rows.items():
        assert row["would_apply"] == evaluations[name].would_apply
        assert row["why"] == evaluations[name].reason
    # a disabled patch would not apply (list said "would apply" before, ignoring the variable)
    assert rows["torch"]["would_apply"] is False
    assert rows["torch"]["why"] == "disabled by BLACKWELL_COMPAT_DISABLE"
    assert list_cmd.render(list(rows.values())).count("here: would not apply: disabled") == 1


def test_the_gpu_section_says_what_serves_fused_kernels():
    gpu = {
        "gpu": "emulated sm_121 (CPU tensors)",
        "rung": "fuser",
        "patches": ["fuser"],
        "why": "NVRTC remedy off: BLACKWELL_COMPAT_NVRTC=off: torch keeps its own NVRTC",
        "triton": "",
        "fuser": "fuser rung: GPU fusion off (torch._C._jit_override_can_fuse_on_gpu(False))",
    }
    assert list_cmd.render_gpus([gpu]).splitlines() == [
        "* emulated sm_121 (CPU tensors): the fuser rung: fuser",
        "    why: NVRTC remedy off: BLACKWELL_COMPAT_NVRTC=off: torch keeps its own NVRTC",
        "    fused TorchScript kernels: fuser rung: GPU fusion off "
        "(torch._C._jit_override_can_fuse_on_gpu(False))",
    ]
