"""Which ptxas Triton uses and which GPU names it takes: stand-in tools and the real one."""

from __future__ import annotations

import importlib.util
import os

from support.ptxas_tools import make_tool, make_triton

from blackwell_compat.probing.ptxas import (
    PTXAS_BLACKWELL_ENV,
    PTXAS_ENV,
    probe_tool,
    probe_triton,
    triton_gpu_name,
)


def test_gpu_names_as_triton_passes_them():
    assert triton_gpu_name("sm_121") == "sm_121a"
    assert triton_gpu_name("sm_90") == "sm_90a"
    assert triton_gpu_name("sm_86") == "sm_86"


def test_old_triton_ptxas_rejects_gb10(tmp_path):
    triton = make_triton(tmp_path, blackwell_tool=False)
    facts = probe_triton(["sm_90", "sm_121"], env={"PATH": ""}, triton_dir=triton)
    assert facts.uses == {"sm_90": "ptxas", "sm_121": "ptxas"}
    (tool,) = facts.tools
    assert tool.version == "12.8" and tool.source == "bundled with triton"
    assert tool.accepts == {"sm_90a": True, "sm_121a": False}
    assert "is not defined for option 'gpu-name'" in tool.errors["sm_121a"]


def test_newer_triton_uses_its_blackwell_ptxas_for_sm_100_and_up(tmp_path):
    triton = make_triton(tmp_path, blackwell_tool=True)
    facts = probe_triton(["sm_90", "sm_121"], env={"PATH": ""}, triton_dir=triton)
    assert facts.uses == {"sm_90": "ptxas", "sm_121": "ptxas-blackwell"}
    blackwell = facts.tool("ptxas-blackwell")
    assert blackwell is not None and blackwell.accepts == {"sm_121a": True}
    assert facts.alternatives == ()  # nothing rejected: no search


def test_env_override_is_used_when_it_runs(tmp_path):
    triton = make_triton(tmp_path, blackwell_tool=False)
    good = make_tool(tmp_path / "cuda-13" / "bin" / "ptxas", "13.0", rejects=())
    facts = probe_triton(["sm_121"], env={PTXAS_ENV: good, "PATH": ""}, triton_dir=triton)
    (tool,) = facts.tools
    assert tool.path == good and tool.source == f"from {PTXAS_ENV}"
    assert tool.accepts == {"sm_121a": True}


def test_env_override_that_does_not_run_falls_back_like_triton(tmp_path):
    triton = make_triton(tmp_path, blackwell_tool=True)
    env = {PTXAS_BLACKWELL_ENV: str(tmp_path / "missing" / "ptxas"), "PATH": ""}
    facts = probe_triton(["sm_120"], env=env, triton_dir=triton)
    (tool,) = facts.tools
    assert tool.path.endswith("ptxas-blackwell")
    assert "falls back" in tool.source and PTXAS_BLACKWELL_ENV in tool.source


def test_alternatives_are_found_and_tested_when_the_gpu_is_rejected(tmp_path):
    triton = make_triton(tmp_path, blackwell_tool=False)
    cuda_home = tmp_path / "cuda-12.9"
    good = make_tool(cuda_home / "bin" / "ptxas", "12.9", rejects=())
    env = {"CUDA_HOME": str(cuda_home), "PATH": ""}
    facts = probe_triton(["sm_121"], env=env, triton_dir=triton)
    paths = {alt.path: alt for alt in facts.alternatives}
    assert good in paths and paths[good].accepts == {"sm_121a": True}


def test_a_hanging_ptxas_is_an_error_not_a_hang(tmp_path):
    tool = make_tool(tmp_path / "ptxas", sleep=True)
    probe = probe_tool(tool, "ptxas", "test", ["sm_121a"], timeout=1)
    assert probe.error is not None and "timed out after 1 s" in probe.error


def test_a_triton_folder_without_its_tools(tmp_path):
    (tmp_path / "triton").mkdir()
    facts = probe_triton(["sm_121"], env={"PATH": ""}, triton_dir=str(tmp_path / "triton"))
    (tool,) = facts.tools
    assert tool.error is not None and tool.accepts == {}


def test_the_real_triton_of_this_environment():
    spec = importlib.util.find_spec("triton")
    facts = probe_triton(["sm_90", "sm_120", "sm_121"], env={"PATH": os.environ.get("PATH", "")})
    assert facts.installed == (spec is not None)
    if spec is None:
        assert facts.tools == ()
        return
    for tool in facts.tools:
        assert tool.error is None, tool
        assert tool.version is not None
    # sm_120a came with CUDA 12.8's ptxas (Triton 3.2 bundles 12.4, 3.6 a 12.9 ptxas-blackwell).
    tool = facts.tool(facts.uses["sm_120"])
    assert tool is not None and tool.version is not None
    new_enough = tuple(int(p) for p in tool.version.split(".")) >= (12, 8)
    assert tool.accepts["sm_120a"] is new_enough, tool
    rejected = {n for t in facts.tools for n, ok in t.accepts.items() if not ok}
    for alternative in facts.alternatives:  # searched only when something was rejected
        assert rejected and (alternative.error or set(alternative.accepts) == rejected)
    bundled_plain = os.path.join(facts.location or "", "backends", "nvidia", "bin", "ptxas")
    blackwell = facts.tool("ptxas-blackwell")
    if blackwell is None or not os.path.exists(bundled_plain):
        return
    # Point Triton's Blackwell tool at its plain ptxas: a CUDA 12.8 ptxas rejects sm_121a, and
    # the doctor then finds the bundled ptxas-blackwell as the way out.
    env = {PTXAS_BLACKWELL_ENV: bundled_plain, "PATH": ""}
    facts = probe_triton(["sm_121"], env=env)
    tool = facts.tool("ptxas-blackwell")
    assert tool is not None and tool.path == bundled_plain
    assert tool.version is not None
    if tuple(int(p) for p in tool.version.split(".")) < (12, 9):
        assert tool.accepts == {"sm_121a": False}
        assert "sm_121a" in tool.errors["sm_121a"]
        assert any(
            alt.path == blackwell.path and alt.accepts == {"sm_121a": True}
            for alt in facts.alternatives
        )
