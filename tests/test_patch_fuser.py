"""The ``fuser`` patch (the fuser rung) through the public API: ``bc.apply()``,
``bc.revert()``, ``bc.status()``, ``engine.ladder()``; its gates; and parity of scripted
functions with their eager twins while it is on (CPU tensors, emulated GPU)."""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Iterator

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat import engine, state
from blackwell_compat.engine.gates import version_gate
from blackwell_compat.patches.fuser import FuserPatch

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

SWITCH = "torch._C._jit_override_can_fuse_on_gpu(False)"


@pytest.fixture(autouse=True)
def _switches() -> Iterator[None]:
    c = torch._C
    saved = (c._jit_can_fuse_on_gpu(), c._jit_can_fuse_on_cpu(), c._jit_get_te_must_use_llvm_cpu())
    c._jit_override_can_fuse_on_gpu(True)  # torch's default for a CUDA build
    yield
    state.reset_for_tests()
    c._jit_override_can_fuse_on_gpu(saved[0])
    c._jit_override_can_fuse_on_cpu(saved[1])
    c._jit_set_te_must_use_llvm_cpu(saved[2])


def _fuser_status() -> bc.PatchStatus:
    (entry,) = [s for s in bc.status() if s.name == "fuser"]
    return entry


def test_declaration_and_version_gate() -> None:
    patch = FuserPatch()
    assert patch.name == "fuser" and patch.modules == ("torch",) and patch.requires_affected
    assert patch.check(torch) == []
    for version, ok in (
        ("2.5.1", False),
        ("2.6.0", True),
        ("2.11.0", True),
        ("2.15.0", True),
        ("2.16.0", False),
    ):
        assert version_gate(patch, lambda _d, v=version: v)[0] is ok, version
    ok, why, _ = version_gate(patch, lambda _d: "2.16.0")
    assert not ok and "outside the supported range '>=2.6,<2.16'" in why


def test_not_applied_without_an_affected_gpu() -> None:
    report = bc.apply(only="fuser")
    assert "fuser" in report.skipped and torch._C._jit_can_fuse_on_gpu() is True


def test_apply_under_emulation_turns_gpu_fusion_off_and_revert_restores_it() -> None:
    with bc.emulate("sm_121"):
        report = bc.apply()
        assert "fuser" in report.applied, report
        assert torch._C._jit_can_fuse_on_gpu() is False
        (service,) = report.gpus
        assert service.rung == engine.RUNG_PATCHES and "fuser" in service.patches
        assert service.fuser.startswith(f"fuser rung: GPU fusion off ({SWITCH})")
        assert "NVRTC remedy off" in service.why  # why the cheaper rung could not serve
        assert "fused TorchScript kernels: fuser rung: GPU fusion off" in str(report)
        assert report.as_dict()["gpus"][0]["fuser"] == service.fuser
        entry = _fuser_status()
        assert entry.state == engine.APPLIED
        assert any(n.startswith(f"GPU fusion off ({SWITCH})") for n in entry.notes)
        assert f"ladder: {service}" in entry.notes
        bc.revert()
    assert torch._C._jit_can_fuse_on_gpu() is True
    assert _fuser_status().state == engine.NOT_APPLIED


def test_alone_it_is_the_fuser_rung() -> None:
    with bc.emulate("sm_121"):
        (service,) = bc.apply(only="fuser").gpus
    assert service.rung == engine.RUNG_FUSER and service.patches == ("fuser",)
    assert str(service).startswith("emulated sm_121 (CPU tensors): fuser rung: NVRTC remedy off")


def test_planned_ladder_says_what_apply_would_do() -> None:
    with bc.emulate("sm_121"):
        (planned,) = engine.ladder(planned=True)
    assert "fuser" in planned.patches
    assert planned.fuser.startswith(
        f"the fuser rung would turn GPU fusion off at apply() ({SWITCH[:-7]}"
    )
    assert torch._C._jit_can_fuse_on_gpu() is True  # planning changes nothing


def test_the_users_setting_is_respected_and_named() -> None:
    torch._C._jit_override_can_fuse_on_gpu(False)
    with bc.emulate("sm_121"):
        (planned,) = engine.ladder(planned=True)
        assert planned.fuser.startswith("GPU fusion already off by the user")
        report = bc.apply(only="fuser")
        (service,) = report.gpus
        assert "already off by the user" in service.fuser
        assert any("already off by the user" in n for n in _fuser_status().notes)
        bc.revert()
    assert torch._C._jit_can_fuse_on_gpu() is False


def test_a_user_turning_it_on_after_apply_is_reported_and_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with bc.emulate("sm_121"):
        bc.apply(only="fuser")
        torch._C._jit_override_can_fuse_on_gpu(True)
        (service,) = engine.ladder()
        assert service.fuser.startswith("NOT SERVED: GPU fusion turned back on after apply()")
        with caplog.at_level("WARNING", logger="blackwell_compat"):
            bc.revert()
    assert torch._C._jit_can_fuse_on_gpu() is True
    assert "turned back on by the user after apply(): left as it is" in caplog.text


def test_excluded_the_ladder_says_fused_kernels_are_not_served() -> None:
    with bc.emulate("sm_121"):
        (service,) = bc.apply(exclude="fuser").gpus
    assert service.fuser.startswith("NOT SERVED: fused kernels compile with torch's NVRTC")
    assert torch._C._jit_can_fuse_on_gpu() is True


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLACKWELL_COMPAT_DISABLE", "fuser")
    with bc.emulate("sm_121"):
        report = bc.apply()
    assert report.skipped["fuser"] == "disabled by BLACKWELL_COMPAT_DISABLE"
    assert torch._C._jit_can_fuse_on_gpu() is True


def test_too_late_for_a_plan_already_optimised() -> None:
    torch._C._jit_override_can_fuse_on_cpu(True)  # the stand-in: CPU fusion on
    torch._C._jit_set_te_must_use_llvm_cpu(False)

    @torch.jit.script
    def gate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        t = a + b
        return torch.tanh(t) * torch.sigmoid(t)

    # Optimised (fused) before emulation starts: under emulation the fused call would raise
    # the emulated NVRTC error (blackwell_compat.fused_kernels), as on the GPU.
    for _ in range(5):
        gate(torch.randn(8), torch.randn(8))
    with bc.emulate("sm_121"):
        (service,) = bc.apply(only="fuser").gpus
    assert (
        "too late for plans optimised before it: prim::TensorExprGroup (aten::add, aten::tanh, "
        in service.fuser
    )
    assert "on cpu" in service.fuser
    assert any("too late" in n for n in _fuser_status().notes)


def test_applied_before_torch_is_imported_it_waits_for_it() -> None:
    """A fresh process: apply() before `import torch` waits, then turns GPU fusion off."""
    import subprocess
    import sys

    from support.environ import clean_env

    code = (
        "import blackwell_compat as bc\n"
        "r = bc.apply(only='fuser')\n"
        "assert r.pending == ['fuser'], r\n"
        "import torch\n"
        "assert torch._C._jit_can_fuse_on_gpu() is False\n"
        "(s,) = [s for s in bc.status() if s.name == 'fuser']\n"
        "assert s.state == 'applied', s\n"
        "bc.revert()\n"
        "assert torch._C._jit_can_fuse_on_gpu() is True\n"
        "print('ok')\n"
    )
    env = clean_env(BLACKWELL_COMPAT_EMULATE="sm_121", BLACKWELL_COMPAT_NVRTC="off")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.slow
def test_list_json_and_text_name_the_fuser_rung() -> None:
    import json
    import subprocess
    import sys

    from support.environ import clean_env

    env = clean_env(BLACKWELL_COMPAT_EMULATE="sm_121", BLACKWELL_COMPAT_NVRTC="off")
    listed = {}
    for args in (["--json"], []):
        done = subprocess.run(
            [sys.executable, "-m", "blackwell_compat", "list", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        listed[bool(args)] = done.stdout
    (gpu,) = json.loads(listed[True])["gpus"]
    assert gpu["rung"] == "patches" and "fuser" in gpu["patches"]
    assert gpu["fuser"].startswith("the fuser rung would turn GPU fusion off at apply()")
    (row,) = [r for r in json.loads(listed[True])["patches"] if r["name"] == "fuser"]
    assert row["would_apply"] is True
    assert (
        "    fused TorchScript kernels: the fuser rung would turn GPU fusion off" in listed[False]
    )


# -- parity: scripted functions with the rung on equal their eager twins ----------------------


def _gate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    t = a + b
    return torch.tanh(t) * torch.sigmoid(t)


def _quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    w = q[..., 0:1]
    xyz = q[..., 1:]
    t = 2.0 * torch.cross(xyz, v, dim=-1)
    return v + w * t + torch.cross(xyz, t, dim=-1)


def _wrap_to_pi(x: torch.Tensor) -> torch.Tensor:
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def _copysign_scale(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.copysign(a * 0.5 + 1.0, b) / (b.abs() + 1.0)


CASES: list[tuple[str, Callable[..., torch.Tensor], int]] = [
    ("gate", _gate, 2),
    ("quat_rotate", _quat_rotate, 2),
    ("wrap_to_pi", _wrap_to_pi, 1),
    ("copysign_scale", _copysign_scale, 2),
]
SPECIAL = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-40, -1e-40, 3.0, -7.5]


def _inputs(name: str, arity: int, gen: torch.Generator) -> list[list[torch.Tensor]]:
    if name == "quat_rotate":
        q = torch.randn(33, 4, generator=gen)
        v = torch.randn(33, 3, generator=gen)
        strided = torch.randn(33, 8, generator=gen)[:, ::2]  # non-contiguous quaternions
        return [[q, v], [strided, v], [q[:1], torch.randn(5, 3, generator=gen)[:1]]]
    special = torch.tensor(SPECIAL)
    grid = [special.repeat_interleave(len(SPECIAL)), special.repeat(len(SPECIAL))]
    base = torch.randn(6, 10, generator=gen)
    samples = [
        grid[:arity],
        [base, torch.randn(10, generator=gen)][:arity],  # broadcast
        [base.t(), torch.randn(10, 6, generator=gen)][:arity],  # strided
        [torch.tensor(2.5), torch.tensor(-0.0)][:arity],  # 0-dim
        [torch.empty(0), torch.empty(0)][:arity],  # empty
    ]
    return samples


#: NNC's CPU code (the stand-in, interpreted without LLVM) computes tanh/sigmoid its own way:
#: float32 results differ from the eager ones by up to 3 ulp (measured: 1.8e-7 absolute,
#: 3.3e-7 relative, in 13% of 100 000 gate outputs).  The op-by-op path must be bit-exact.
FUSED_RTOL = 8 * torch.finfo(torch.float32).eps


def _same(got: torch.Tensor, want: torch.Tensor, *, exact: bool) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.stride() == want.stride() or not exact
    assert torch.equal(got.isnan(), want.isnan())
    known = ~want.isnan()
    if exact:
        assert torch.equal(got[known], want[known])
        assert torch.equal(torch.signbit(got[known]), torch.signbit(want[known]))  # -0.0
    else:
        torch.testing.assert_close(got[known], want[known], rtol=FUSED_RTOL, atol=1e-38)
        nonzero = known & (want != 0)
        assert torch.equal(torch.signbit(got[nonzero]), torch.signbit(want[nonzero]))


@pytest.mark.parametrize("cpu_fusion", [False, True], ids=["op-by-op", "cpu-fusion-stand-in"])
@pytest.mark.parametrize(("name", "fn", "arity"), CASES, ids=[c[0] for c in CASES])
def test_scripted_equals_eager_bit_exactly_with_the_rung_on(
    name: str, fn: Callable[..., torch.Tensor], arity: int, cpu_fusion: bool
) -> None:
    torch._C._jit_override_can_fuse_on_cpu(cpu_fusion)
    torch._C._jit_set_te_must_use_llvm_cpu(False)
    # A fresh function object: torch.jit.script caches per function, and a plan optimised by
    # an earlier test would keep its fusion (or lack of it).
    fresh = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__)
    fresh.__annotations__ = dict(fn.__annotations__)
    scripted = torch.jit.script(fresh)
    gen = torch.Generator().manual_seed(20)
    fused = 0
    with bc.emulate("sm_121"):
        assert "fuser" in bc.apply(only="fuser").applied
        for args in _inputs(name, arity, gen):
            want = fn(*args)
            for _ in range(4):  # past the profiling runs: the optimised plan runs
                _same(scripted(*args), want, exact=not cpu_fusion)
            graph = torch.jit.last_executed_optimized_graph()
            fused += len(graph.findAllNodes("prim::TensorExprGroup", True))
    # The rung leaves CPU fusion alone: the stand-in fuses the gate's CPU tensors; without it
    # nothing fuses.
    if not cpu_fusion:
        assert fused == 0
    elif name == "gate":
        assert fused > 0
