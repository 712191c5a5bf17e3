"""A seed model in its GPU form on the emulated device: Kokoro's ``KModel`` (random weights,
offline) moved with ``model.to("cuda")``, unchanged, fails as on a GB10 without the library and
matches the CPU reference with ``bc.apply()``."""

from __future__ import annotations

import pytest
import torch

import blackwell_compat as bc

pytest.importorskip("kokoro")

from support.models import KOKORO_SHORT, build_kmodel, run_kmodel


@pytest.mark.slow
def test_kokoro_kmodel_on_cuda_fails_then_matches_cpu_with_apply() -> None:
    model = build_kmodel()
    reference = run_kmodel(model, KOKORO_SHORT)
    with bc.emulate("sm_121", device="cuda"):
        model.to("cuda")
        assert all(p.is_cuda for p in model.parameters()) and model.device.type == "cuda"
        with pytest.raises(RuntimeError, match="gpu-architecture") as info:
            run_kmodel(model, KOKORO_SHORT)
        assert "complex" in str(info.value)
        bc.apply(only="kokoro")
        try:
            audio = run_kmodel(model, KOKORO_SHORT)
        finally:
            bc.revert()
        model.cpu()
    assert audio.dtype == reference.dtype and audio.shape == reference.shape
    torch.testing.assert_close(audio.cpu(), reference, rtol=1e-4, atol=1e-4)
    assert all(not p.is_cuda for p in model.parameters())
