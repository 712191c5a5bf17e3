"""blackwell-compat patch for acme_resampler: a real-valued spectral energy.

Written with the same public toolkit as blackwell-compat's built-in patches
(:mod:`blackwell_compat.toolkit`): one declaration says what is replaced, which argument
decides, and what the rewrite relies on (the drift check).
"""

from __future__ import annotations

from typing import Any

from blackwell_compat.toolkit import AS_REWRITE, DeclaredPatch, Expect, Rewrite


def real_energy(signal: Any, n_fft: int = 64) -> Any:
    """``spectral_energy`` without complex ``abs``: ``re**2 + im**2`` of the real view."""
    import torch  # heavy imports inside functions: the entry point is loaded everywhere

    spectrum = torch.view_as_real(torch.fft.rfft(signal, n=n_fft))
    return spectrum.pow(2).sum(-1)


class AcmeResamplerPatch(DeclaredPatch):
    name = "acme_resampler"
    summary = "acme_resampler.spectral_energy without complex abs"
    distribution = "acme-resampler"
    supported = ">=1.4,<2"
    declarations = (
        Rewrite(
            Expect(
                "acme_resampler",
                "spectral_energy",
                signature=AS_REWRITE,  # same parameters and defaults as the rewrite
                names=("rfft", "abs"),  # the body still calls what the rewrite replaces
            ),
            rewrite=real_energy,
            on="signal",  # a tensor on a served device takes the rewrite; others the original
        ),
    )
