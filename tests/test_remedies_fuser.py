"""The fuser rung's mechanism (:mod:`blackwell_compat.remedies.fuser`) on the live torch
switches of this process: what it turns, what it gives back, what it leaves to the user, and
the plans it comes too late for (CPU fusion on is the observable stand-in for the GPU fuser:
``scripts/fuser_switches.py``)."""

from __future__ import annotations

import types
from collections.abc import Iterator

import pytest
import torch

from blackwell_compat import state
from blackwell_compat.remedies import fuser

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


@pytest.fixture(autouse=True)
def _switches() -> Iterator[None]:
    """Every test gets torch's fuser switches back as they were."""
    c = torch._C
    saved = (c._jit_can_fuse_on_gpu(), c._jit_can_fuse_on_cpu(), c._jit_texpr_fuser_enabled())
    must_llvm = c._jit_get_te_must_use_llvm_cpu()
    yield
    state.reset_for_tests()
    c._jit_override_can_fuse_on_gpu(saved[0])
    c._jit_override_can_fuse_on_cpu(saved[1])
    c._jit_set_texpr_fuser_enabled(saved[2])
    c._jit_set_te_must_use_llvm_cpu(must_llvm)


def _cpu_fusion_on() -> None:
    torch._C._jit_override_can_fuse_on_cpu(True)
    torch._C._jit_set_te_must_use_llvm_cpu(False)  # the wheels have no LLVM


def test_the_switches_are_there_in_this_torch() -> None:
    assert fuser.missing_switches(torch) == []
    bare = types.ModuleType("torch")
    bare._C = types.SimpleNamespace()  # type: ignore[attr-defined]
    assert fuser.missing_switches(bare) == [
        "torch._C._jit_override_can_fuse_on_gpu is missing",
        "torch._C._jit_can_fuse_on_gpu is missing",
        "torch.jit.last_executed_optimized_graph is missing",
    ]


def test_activate_turns_only_gpu_fusion_off_and_deactivate_gives_it_back() -> None:
    torch._C._jit_override_can_fuse_on_gpu(True)
    cpu, texpr = torch._C._jit_can_fuse_on_cpu(), torch._C._jit_texpr_fuser_enabled()
    assert fuser.state().status == fuser.INACTIVE
    result = fuser.activate(torch)
    assert result.status == fuser.APPLIED and result.before is True
    assert torch._C._jit_can_fuse_on_gpu() is False
    # Nothing else moves: CPU fusion and the TensorExpr fuser stay as the user set them.
    assert (torch._C._jit_can_fuse_on_cpu(), torch._C._jit_texpr_fuser_enabled()) == (cpu, texpr)
    assert "torch._C._jit_override_can_fuse_on_gpu(False)" in result.describe()
    assert fuser.COST in result.describe()
    assert fuser.activate(torch) == result  # idempotent
    assert fuser.deactivate(torch) == []
    assert torch._C._jit_can_fuse_on_gpu() is True
    assert fuser.state().status == fuser.REVERTED
    assert fuser.deactivate(torch) == []  # nothing left to give back


def test_gpu_fusion_the_user_turned_off_is_left_off_and_named() -> None:
    torch._C._jit_override_can_fuse_on_gpu(False)
    result = fuser.activate(torch)
    assert result.status == fuser.ALREADY_OFF and result.before is False
    assert "already off by the user" in result.describe()
    assert torch._C._jit_can_fuse_on_gpu() is False
    assert fuser.deactivate(torch) == []
    assert torch._C._jit_can_fuse_on_gpu() is False  # still the user's own setting
    assert "already off by the user" in fuser.state().reason


def test_a_user_turning_it_back_on_is_reported_and_not_clobbered() -> None:
    torch._C._jit_override_can_fuse_on_gpu(True)
    fuser.activate(torch)
    torch._C._jit_override_can_fuse_on_gpu(True)  # the user's choice, after the rung
    now = fuser.state()
    assert now.status == fuser.TURNED_ON
    assert "turned back on after apply()" in now.describe()
    (message,) = fuser.deactivate(torch)
    assert "turned back on by the user" in message
    assert torch._C._jit_can_fuse_on_gpu() is True


def test_a_fuser_block_entered_after_the_rung_gives_back_the_rung_setting() -> None:
    torch._C._jit_override_can_fuse_on_gpu(True)
    fuser.activate(torch)
    with torch.jit.fuser("fuser1"):  # the legacy fuser: turns GPU fusion on for its block
        assert fuser.state().status == fuser.TURNED_ON
    assert fuser.state().status == fuser.APPLIED
    fuser.deactivate(torch)
    assert torch._C._jit_can_fuse_on_gpu() is True


def _optimised_with_a_group() -> torch.jit.ScriptFunction:
    @torch.jit.script
    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x * 2.0 + y).sin() * y - x

    x, y = torch.randn(16), torch.randn(16)
    for _ in range(5):
        step(x, y)
    return step


def test_a_plan_already_optimised_with_a_group_is_named_too_late() -> None:
    _cpu_fusion_on()
    _optimised_with_a_group()
    (late,) = fuser.late_groups(torch, emulating=True)
    assert (
        late
        == "prim::TensorExprGroup (aten::mul, aten::add, aten::sin, aten::mul, aten::sub) on cpu"
    )
    # Outside emulation a CPU group is no GPU's business.
    assert fuser.late_groups(torch, emulating=False) == ()
    result = fuser.activate(torch, emulating=True)
    assert result.late == (late,)
    assert "too late for plans optimised before it: " + late in result.describe()


def test_the_switch_does_not_reach_an_optimised_plan() -> None:
    """What "too late" rests on, observed with the CPU switch (its GPU twin behaves the same
    for CUDA tensors: scripts/fuser_switches.py): a plan keeps its group."""
    _cpu_fusion_on()
    step = _optimised_with_a_group()
    torch._C._jit_override_can_fuse_on_cpu(False)
    step(torch.randn(16), torch.randn(16))
    graph = torch.jit.last_executed_optimized_graph()
    assert graph.findAllNodes("prim::TensorExprGroup", True)


def test_nothing_executed_nothing_late() -> None:
    fresh = types.SimpleNamespace(
        jit=types.SimpleNamespace(last_executed_optimized_graph=lambda: None)
    )
    assert fuser.late_groups(fresh, emulating=True) == ()  # type: ignore[arg-type]


def test_state_round_trips_as_a_dict() -> None:
    torch._C._jit_override_can_fuse_on_gpu(True)
    data = fuser.activate(torch).as_dict()
    assert data == {
        "status": "applied",
        "reason": data["reason"],
        "before": True,
        "late": [],
        "cuda_initialised": False,  # no GPU here
    }
    assert data["reason"].startswith("GPU fusion off (torch._C._jit_override_can_fuse_on_gpu")


def test_cuda_initialised_before_the_rung_is_said() -> None:
    state_ = fuser.FuserState(fuser.APPLIED, "GPU fusion off", before=True, cuda_initialised=True)
    assert state_.describe().endswith(
        "CUDA was initialised before it: a scripted function optimised on the GPU before "
        "apply() keeps its fusion (none seen in the last plan run here)"
    )
    late = fuser.FuserState(
        fuser.APPLIED, "GPU fusion off", late=("prim::TensorExprGroup (aten::mul) on cuda",)
    )
    assert "CUDA was initialised" not in late.describe()


def test_a_cpu_only_torch_is_not_blamed_on_the_user() -> None:
    cpu_only = types.SimpleNamespace(version=types.SimpleNamespace(cuda=None, hip=None))
    assert fuser.off_why(cpu_only).endswith(  # type: ignore[arg-type]
        "this torch is a CPU-only build, it has no GPU fuser"
    )
    assert fuser.off_why(torch).startswith("GPU fusion already off by the user")  # a CUDA build
