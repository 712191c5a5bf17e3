"""The scripted WaveNet gate of Coqui TTS 0.22 inside a VITS posterior encoder (offline).

``TTS/tts/layers/generic/wavenet.py`` scripts ``fused_add_tanh_sigmoid_multiply`` (add, tanh,
sigmoid, mul) with ``@torch.jit.script``; its ``WN`` calls it once per layer, and VITS's
``PosteriorEncoder`` runs a ``WN``.  Built here from the package's own classes, random
weights:

- under ``bc.emulate("sm_121")`` without the library, the encoder fails with the NVRTC error
  (``fused_tanh_sigmoid_mul``) at the call where the GPU compiles the gate's fused kernel;
- with ``bc.apply()`` (the fuser rung) it runs, and its outputs equal those of the same encoder
  with the gate unscripted (the function's own Python source) bit for bit in float32/float64;
- with CPU fusion on (the GPU stand-in, what runs when the NVRTC remedy serves), the fused
  gate differs from eager by NNC's own tanh/sigmoid rounding, within the stated tolerance.

Needs the ``tests-tts022`` environment.  In tests-full, coqui-tts 0.28 (whose gate is no
longer scripted) is the unscripted control (``test_fused_clients_tts_control.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat import state

pytestmark = [pytest.mark.tts022, pytest.mark.targets, pytest.mark.slow]

NVRTC_LINE = "nvrtc: error: invalid value for --gpu-architecture (-arch)"
C = torch._C
#: NNC's CPU tanh/sigmoid (interpreted, no LLVM) differ from ATen's by a few ulp; through the
#: encoder's convolutions that stays below this (measured: see the test's assertion message).
FUSED_ATOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.fixture(autouse=True)
def _fuser_switches() -> Iterator[None]:
    before = (
        C._jit_can_fuse_on_cpu(),
        C._jit_get_te_must_use_llvm_cpu(),
        C._jit_texpr_fuser_enabled(),
        C._jit_can_fuse_on_gpu(),
    )
    yield
    bc.revert()
    state.reset_for_tests()
    C._jit_override_can_fuse_on_cpu(before[0])
    C._jit_set_te_must_use_llvm_cpu(before[1])
    C._jit_set_texpr_fuser_enabled(before[2])
    C._jit_override_can_fuse_on_gpu(before[3])


def _wavenet() -> Any:
    from TTS.tts.layers.generic import wavenet

    return wavenet


def _fresh_gate() -> Any:
    """A newly scripted copy of the package's gate (its own plans: a first call is first)."""
    from support.robotics import fresh

    return torch.jit.script(fresh(_eager_gate()))


def _eager_gate() -> Any:
    gate = _wavenet().fused_add_tanh_sigmoid_multiply
    # torch.jit.script keeps the Python function it compiled.
    original = getattr(gate, "_torchdynamo_inline", None)
    assert callable(original) and original.__name__ == "fused_add_tanh_sigmoid_multiply"
    return original


def _encoder(dtype: torch.dtype) -> Any:
    from TTS.tts.layers.vits.networks import PosteriorEncoder

    torch.manual_seed(0)
    encoder = PosteriorEncoder(
        in_channels=24,
        out_channels=8,
        hidden_channels=16,
        kernel_size=5,
        dilation_rate=1,
        num_layers=4,
        cond_channels=6,
    )
    return encoder.eval().to(dtype)


def _inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 24, 40, generator=gen).to(dtype)
    lengths = torch.tensor([40, 23, 1])  # padded frames: the mask zeroes them
    g = torch.randn(3, 6, 1, generator=gen).to(dtype)
    return x, lengths, g


def _run(encoder: Any, gate: Any, dtype: torch.dtype, calls: int = 3) -> tuple[Any, ...]:
    """*calls* forward passes with the module's gate set to *gate*; the last outputs."""
    wavenet = _wavenet()
    saved = wavenet.fused_add_tanh_sigmoid_multiply
    wavenet.fused_add_tanh_sigmoid_multiply = gate
    try:
        with torch.no_grad():
            for _ in range(calls):
                torch.manual_seed(2)  # the posterior sample's noise
                out = encoder(*_inputs(dtype)[:2], g=_inputs(dtype)[2])
    finally:
        wavenet.fused_add_tanh_sigmoid_multiply = saved
    return tuple(out)


def _assert_same(got: tuple[Any, ...], want: tuple[Any, ...]) -> None:
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == w.dtype and g.shape == w.shape and g.stride() == w.stride(), i
        torch.testing.assert_close(g, w, rtol=0, atol=0, msg=f"output {i}")
        assert torch.equal(torch.signbit(g), torch.signbit(w)), i


def test_the_package_scripts_the_gate_and_the_cpu_stand_in_fuses_it() -> None:
    wavenet = _wavenet()
    assert isinstance(wavenet.fused_add_tanh_sigmoid_multiply, torch.jit.ScriptFunction)
    C._jit_override_can_fuse_on_cpu(True)
    C._jit_set_te_must_use_llvm_cpu(False)
    gate = _fresh_gate()
    _run(_encoder(torch.float32), gate, torch.float32)
    # The encoder called the gate (4 layers x 3 passes): its last plan holds the group.
    a = torch.randn(2, 32, 7)
    gate(a, a, torch.IntTensor([16]))
    groups = torch.jit.last_executed_optimized_graph().findAllNodes("prim::TensorExprGroup", True)
    (group,) = groups
    ops = [n.kind() for n in group.g("Subgraph").nodes() if n.kind().startswith("aten::")]
    assert ops == ["aten::tanh", "aten::sigmoid", "aten::mul"]


def test_fails_under_emulation_without_the_library() -> None:
    encoder, gate = _encoder(torch.float32), _fresh_gate()
    with bc.emulate("sm_121"), pytest.raises(RuntimeError) as raised:
        _run(encoder, gate, torch.float32)
    text = str(raised.value)
    assert text.startswith(NVRTC_LINE + "\n")
    assert "nvrtc compilation failed:" in text
    assert "fused_tanh_sigmoid_mul" in text and "'fused_add_tanh_sigmoid_multiply'" in text


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_with_the_fuser_rung_the_encoder_equals_the_unscripted_one(dtype: torch.dtype) -> None:
    encoder = _encoder(dtype)
    reference = _run(encoder, _eager_gate(), dtype)
    with bc.emulate("sm_121"):
        report = bc.apply()
        (rung,) = [e for e in report.entries if e.name == "fuser"]
        assert rung.state == "applied", rung
        gate = _fresh_gate()
        got = _run(encoder, gate, dtype, calls=4)
        a = torch.randn(2, 32, 7, dtype=dtype)
        gate(a, a, torch.IntTensor([16]))
        graph = torch.jit.last_executed_optimized_graph()
        assert not graph.findAllNodes("prim::TensorExprGroup", True)
    _assert_same(got, reference)  # z, mean, log_scale, mask: 4 tensors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_fused_cpu_stand_in_is_within_the_stated_tolerance(dtype: torch.dtype) -> None:
    """What runs when fusion stays on (the NVRTC remedy serves): NNC's kernel, whose
    tanh/sigmoid round differently from ATen's."""
    encoder = _encoder(dtype)
    reference = _run(encoder, _eager_gate(), dtype)
    C._jit_override_can_fuse_on_cpu(True)
    C._jit_set_te_must_use_llvm_cpu(False)
    got = _run(encoder, _fresh_gate(), dtype, calls=4)
    worst = max(float((g - w).abs().max()) for g, w in zip(got, reference, strict=True))
    for g, w in zip(got, reference, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=0, atol=FUSED_ATOL[dtype])
    print(f"fused stand-in vs eager, {dtype}: max abs diff {worst:.3g}")


REMEDY_CHILD = """
import json, sys
import blackwell_compat as bc
with bc.emulate("sm_121"):
    report = bc.apply()  # before import torch: the remedy loads the capable NVRTC
import torch
sys.path.insert(0, {tests!r})
import test_fused_clients_tts as t
out = {{"entries": {{e.name: [e.state, e.reason] for e in report.entries}}}}
with bc.emulate("sm_121"):
    out["gpu_fusion"] = torch._C._jit_can_fuse_on_gpu()
    encoder = t._encoder(torch.float32)
    got = t._run(encoder, t._wavenet().fused_add_tanh_sigmoid_multiply, torch.float32, calls=4)
    want = t._run(encoder, t._eager_gate(), torch.float32)
    out["equal"] = all(torch.equal(g, w) for g, w in zip(got, want))
print("@@fused-clients@@ " + json.dumps(out, default=str))
"""


def test_with_a_capable_nvrtc_the_remedy_serves_and_the_gate_stays_scripted(
    nvrtc_libraries: dict[str, str],
) -> None:
    """The package's own scripted gate, four encoder passes under emulation: nothing raises,
    GPU fusion stays on, and (the CPU not fusing here) the outputs are the eager ones."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from support.environ import clean_env

    from blackwell_compat.probing.locate import locate_torch

    major = locate_torch().cuda_major
    capable = {12: "12.9.86", 13: "13.0.88"}
    assert major in capable, f"tests-tts022 has a CUDA 12 or 13 torch build, not {major}"
    env = clean_env(
        BLACKWELL_COMPAT_NVRTC=nvrtc_libraries[capable[major]],
        BLACKWELL_COMPAT_CACHE_DIR=os.environ["BLACKWELL_COMPAT_CACHE_DIR"],
    )
    done = subprocess.run(
        [sys.executable, "-c", REMEDY_CHILD.format(tests=str(Path(__file__).resolve().parent))],
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
    assert out["gpu_fusion"] is True and out["equal"] is True
