"""Robotics-style scripted helpers as clients of the fused-kernel emulation and the fuser rung.

Isaac Gym, Isaac Lab, cuRobo and legged_gym script their quaternion and transform helpers with
``@torch.jit.script``; on an affected GPU the fused kernels NNC builds for them fail to
compile.  The helpers of ``tests/support/robotics.py`` (quaternion multiply, rotate, inverse
rotate, normalise, wrap to pi, copysign, and a step that calls them in a loop) are run here:

- with CPU fusion on (the observable stand-in for the GPU fuser), each gets a fusion group;
- under ``bc.emulate("sm_121")`` without the library's rungs, each fails with the NVRTC error
  at the call where the GPU would compile its fused kernel;
- the fused CPU stand-in and the unfused plan (what the fuser rung leaves) both equal the eager
  functions on the same inputs (dtype, shape, strides, values and signs).

The WaveNet gate of Coqui TTS 0.22 has its own file (``test_fused_clients_tts.py``), the
benchmark's quick run is ``test_bench_fuser.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from support import robotics
from support.fuser_switches import set_switches as _set_switches
from support.fuser_switches import switches as _switches

import blackwell_compat as bc
from blackwell_compat import state

NVRTC_LINE = "nvrtc: error: invalid value for --gpu-architecture (-arch)"
C = torch._C
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HELPERS = tuple(robotics.EAGER)

pytestmark = pytest.mark.filterwarnings(
    # torch >= 2.10 says torch.jit.script is deprecated; the clients still use it.
    "ignore:`torch.jit.script` is deprecated:FutureWarning"
)


@pytest.fixture(autouse=True)
def _fuser_switches() -> Iterator[None]:
    before = _switches()
    yield
    bc.revert()
    state.reset_for_tests()
    _set_switches(before)


def _cpu_fusion_on() -> None:
    C._jit_override_can_fuse_on_cpu(True)
    C._jit_set_te_must_use_llvm_cpu(False)


def _outputs(result: Any) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def _assert_same(got: Any, want: Any, where: str) -> None:
    """dtype, shape, strides, values (nan where nan) and signs (-0.0) identical."""
    got, want = _outputs(got), _outputs(want)
    assert len(got) == len(want), where
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        at = f"{where} output {i}"
        assert g.dtype == w.dtype and g.shape == w.shape, (at, g.dtype, w.dtype, g.shape, w.shape)
        assert g.stride() == w.stride(), (at, g.stride(), w.stride())
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True, msg=at)
        # Signs of every number, -0.0 included (a NaN's sign bit carries no meaning: the fused
        # CPU kernels give some NaNs the sign bit eager leaves clear).
        numbers = ~w.isnan()
        assert torch.equal(torch.signbit(g[numbers]), torch.signbit(w[numbers])), at


def _call_until_error(fn: Any, args: tuple[Any, ...], calls: int = 5) -> tuple[int, str]:
    for index in range(1, calls + 1):
        try:
            fn(*args)
        except RuntimeError as exc:
            return index, str(exc)
    return 0, ""


# -- the facts the other tests rest on ---------------------------------------------------------


@pytest.mark.parametrize("name", HELPERS)
def test_each_helper_gets_a_fusion_group_on_the_cpu_stand_in(name: str) -> None:
    _cpu_fusion_on()
    fn = robotics.scripted(name)
    _, args = robotics.inputs(name, torch.float32)[0]
    for _ in range(3):
        fn(*args)
    graph = torch.jit.last_executed_optimized_graph()
    groups = graph.findAllNodes("prim::TensorExprGroup", True)
    # The step inlines every helper: one group per elementwise chain between the ops NNC
    # does not fuse (norm, cross, sum, stack, the in-place gravity write).
    assert len(groups) == (8 if name == "step" else 1), (name, graph)


def test_support_gives_fresh_compiled_copies() -> None:
    """Each scripted copy has its own plans: a test's first call is a first call."""
    a, b = robotics.scripted("normalize"), robotics.scripted("normalize")
    assert a is not b and a.qualified_name != b.qualified_name
    with pytest.raises(KeyError, match="the helpers are"):
        robotics.inputs("quat_conjugate", torch.float32)


# -- emulation without the library -------------------------------------------------------------


@pytest.mark.parametrize("name", HELPERS)
def test_fails_under_emulation_where_the_gpu_compiles(name: str) -> None:
    fn = robotics.scripted(name)
    _, args = robotics.inputs(name, torch.float32)[0]
    with bc.emulate("sm_121"):
        first = fn(*args)  # the profiling run: nothing fused yet, as on the GPU
        index, text = _call_until_error(fn, args)
    _assert_same(first, robotics.EAGER[name](*args), f"{name} profiling run")
    assert index == 1, (name, index)  # the very next call builds and compiles the group
    assert text.startswith(NVRTC_LINE + "\n"), text
    assert "nvrtc compilation failed:" in text
    assert f"'{name}'" in text and "fused_" in text, text


def test_the_step_names_its_first_fused_kernel_and_its_ops() -> None:
    fn = robotics.scripted("step")
    _, args = robotics.inputs("step", torch.float32)[0]
    with bc.emulate("sm_121"):
        index, text = _call_until_error(fn, args)
    assert index == 2
    line = next(x for x in text.splitlines() if x.startswith("fused kernel "))
    kernel = line.split()[2]
    assert kernel.startswith("fused_") and "aten::" in text, text


@pytest.mark.parametrize("name", ["quat_mul", "step"])
def test_the_eager_helpers_never_raise_under_emulation(name: str) -> None:
    """No false alarm: the same code unscripted runs on precompiled kernels."""
    _, args = robotics.inputs(name, torch.float32)[0]
    with bc.emulate("sm_121"):
        for _ in range(4):
            robotics.EAGER[name](*args)


# -- parity: the fused stand-in and the unfused plan against the eager functions ---------------


def _parity(dtype: torch.dtype, fused: bool) -> int:
    """Compare every helper on every input in *dtype*; the number of outputs compared."""
    if fused:
        _cpu_fusion_on()
    else:
        C._jit_set_texpr_fuser_enabled(False)
    compared = 0
    for name in HELPERS:
        for label, args in robotics.inputs(name, dtype):
            fn = robotics.scripted(name)
            for _ in range(3):
                out = fn(*args)
            graph = torch.jit.last_executed_optimized_graph()
            has_group = bool(graph.findAllNodes("prim::TensorExprGroup", True))
            assert has_group == fused, (name, label, dtype)
            _assert_same(out, robotics.EAGER[name](*args), f"{name} {label} {dtype}")
            compared += len(_outputs(out))
    return compared


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_unfused_plans_equal_the_eager_functions_bit_for_bit(dtype: torch.dtype) -> None:
    """What the fuser rung leaves: every op through its precompiled kernel, as eager."""
    assert _parity(dtype, fused=False) == 48


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_fused_cpu_stand_in_equals_the_eager_functions(dtype: torch.dtype) -> None:
    """NNC on the CPU (no LLVM: its IR interpreter) computes these chains bit for bit as the
    eager kernels (measured).  It fuses no float16/bfloat16 chain on the CPU (next test); on a
    GPU NNC computes those in float32 and rounds once, so there fused half results may differ
    from eager by the rounding of the intermediate steps (docs/fused-kernels.md)."""
    assert _parity(dtype, fused=True) == 48


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cpu_stand_in_fuses_no_half_precision_chain(dtype: torch.dtype) -> None:
    _cpu_fusion_on()
    for name in HELPERS:
        fn = robotics.scripted(name)
        _, args = robotics.inputs(name, dtype)[0]
        for _ in range(3):
            out = fn(*args)
        graph = torch.jit.last_executed_optimized_graph()
        assert not graph.findAllNodes("prim::TensorExprGroup", True), (name, dtype)
        _assert_same(out, robotics.EAGER[name](*args), f"{name} {dtype}")


def test_special_values_reach_the_helpers() -> None:
    """The inputs carry what the quality bar asks for (so the parity tests cannot pass on
    tame values only)."""
    seen: dict[str, bool] = {"-0.0": False, "inf": False, "nan": False, "empty": False}
    seen.update({"0-dim": False, "strided": False, "broadcast": False, "subnormal": False})
    tiny = torch.finfo(torch.float32).tiny
    for name in HELPERS:
        for _label, args in robotics.inputs(name, torch.float32):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            for t in tensors:
                flat = t.reshape(-1)
                seen["-0.0"] |= bool(((flat == 0) & flat.signbit()).any())
                seen["inf"] |= bool(flat.isinf().any())
                seen["nan"] |= bool(flat.isnan().any())
                seen["empty"] |= t.numel() == 0
                seen["0-dim"] |= t.dim() == 0
                seen["strided"] |= not t.is_contiguous()
                nonzero = flat[(flat != 0) & flat.isfinite()]
                seen["subnormal"] |= bool((nonzero.abs() < tiny).any())
            shapes = {tuple(t.shape[:-1]) for t in tensors if t.dim() > 1}
            seen["broadcast"] |= len(shapes) > 1
    assert all(seen.values()), seen
    wrapped = robotics.wrap_to_pi(torch.tensor([3 * math.pi, -0.5 * math.pi], dtype=torch.float64))
    assert torch.allclose(wrapped, torch.tensor([math.pi, -0.5 * math.pi], dtype=torch.float64))


# -- the fuser rung: bc.apply() under emulation -------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_with_the_fuser_rung_every_helper_runs_and_equals_eager(dtype: torch.dtype) -> None:
    """Where no NVRTC remedy serves (none configured here), ``bc.apply()`` applies the fuser
    rung: no call raises, no plan holds a fusion group, every output is the eager one bit for
    bit (dtype, shape, strides, values, signs) in every dtype."""
    compared = 0
    with bc.emulate("sm_121"):
        report = bc.apply()
        (rung,) = [e for e in report.entries if e.name == "fuser"]
        assert rung.state == "applied", rung
        assert C._jit_can_fuse_on_gpu() is False
        for name in HELPERS:
            for label, args in robotics.inputs(name, dtype):
                fn = robotics.scripted(name)
                for _ in range(4):
                    out = fn(*args)
                graph = torch.jit.last_executed_optimized_graph()
                assert not graph.findAllNodes("prim::TensorExprGroup", True), (name, label)
                _assert_same(out, robotics.EAGER[name](*args), f"{name} {label} {dtype}")
                compared += len(_outputs(out))
    assert compared == 48
    bc.revert()
    assert C._jit_can_fuse_on_gpu() is True


# -- a capable NVRTC: the remedy serves, fusion stays on ---------------------------------------

REMEDY_CHILD = """
import json, sys
import blackwell_compat as bc
with bc.emulate("sm_121"):
    report = bc.apply()  # before import torch: the remedy loads the capable NVRTC
import torch
sys.path.insert(0, {tests!r})
from support import robotics
out = {{"entries": {{e.name: [e.state, e.reason] for e in report.entries}}}}
with bc.emulate("sm_121"):
    out["gpu_fusion"] = torch._C._jit_can_fuse_on_gpu()
    out["texpr"] = torch._C._jit_texpr_fuser_enabled()
    out["fuser_line"] = [g.fuser for g in bc.ladder()]
    _, args = robotics.inputs("step", torch.float32)[0]
    fn = robotics.scripted("step")
    for _ in range(4):
        fn(*args)  # would raise if the emulated fused kernel failed to compile
    # The CPU stand-in of the GPU fuser, which the remedy leaves on: the plan is fused and
    # its results are the eager ones.
    torch._C._jit_override_can_fuse_on_cpu(True)
    torch._C._jit_set_te_must_use_llvm_cpu(False)
    fused = robotics.scripted("step")
    for _ in range(4):
        got = fused(*args)
    graph = torch.jit.last_executed_optimized_graph()
    out["groups"] = len(graph.findAllNodes("prim::TensorExprGroup", True))
    want = robotics.step(*args)
    out["equal"] = all(torch.equal(g, w) and g.stride() == w.stride() for g, w in zip(got, want))
print("@@fused-clients@@ " + json.dumps(out, default=str))
"""


@pytest.mark.slow
def test_with_a_capable_nvrtc_the_remedy_serves_and_fusion_stays_on(
    nvrtc_libraries: dict[str, str],
) -> None:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from support.environ import clean_env

    from blackwell_compat.probing.locate import locate_torch

    major = locate_torch().cuda_major
    capable = {12: "12.9.86", 13: "13.0.88"}
    if major not in capable:
        pytest.skip(f"needs a CUDA 12 or 13 build of torch (this one: CUDA {major})")
    library = nvrtc_libraries[capable[major]]
    tests = str(Path(__file__).resolve().parent)
    env = clean_env(
        BLACKWELL_COMPAT_NVRTC=library,
        BLACKWELL_COMPAT_CACHE_DIR=os.environ["BLACKWELL_COMPAT_CACHE_DIR"],
    )
    done = subprocess.run(
        [sys.executable, "-c", REMEDY_CHILD.format(tests=tests)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("@@fused-clients@@ ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    out = json.loads(lines[-1].split(" ", 1)[1])
    state_, reason = out["entries"]["fuser"]
    assert state_ != "applied" and "remedy" in reason, (state_, reason)
    assert out["gpu_fusion"] is True and out["texpr"] is True
    (line,) = out["fuser_line"]
    assert "remedy" in line, line
    assert out["groups"] == 8 and out["equal"] is True
