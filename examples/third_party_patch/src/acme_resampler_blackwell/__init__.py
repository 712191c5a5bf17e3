"""blackwell-compat patch for acme_resampler: a real-valued spectral energy."""

from __future__ import annotations

import types
from typing import Any

from blackwell_compat import Patch, PatchContext


class AcmeResamplerPatch(Patch):
    name = "acme_resampler"
    summary = "acme_resampler.spectral_energy without complex abs"
    distribution = "acme-resampler"
    supported = ">=1.4,<2"
    modules = ("acme_resampler",)

    def check(self, module: types.ModuleType) -> list[str]:
        fn = getattr(module, "spectral_energy", None)
        if fn is None:
            return ["acme_resampler.spectral_energy is gone"]
        if "abs" not in fn.__code__.co_names:
            return ["spectral_energy no longer calls abs()"]
        return []

    def apply(self, module: types.ModuleType, ctx: PatchContext) -> None:
        from blackwell_compat.devices import tensor_targeted

        original = ctx.replace_function(module, "spectral_energy", lambda *a, **k: energy(*a, **k))

        def energy(signal: Any, n_fft: int = 64) -> Any:
            if not tensor_targeted(signal):
                return original(signal, n_fft)
            import torch

            spectrum = torch.view_as_real(torch.fft.rfft(signal, n=n_fft))
            return spectrum.pow(2).sum(-1)
