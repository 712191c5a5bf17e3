"""Jiterator-free building blocks for spectral code, on real arithmetic.

On CUDA, PyTorch compiles the kernels of complex ``abs``, ``angle``, ``exp``... at run time with
NVRTC; on a GPU the loaded NVRTC does not know, they fail.  The functions here give the same
results using only precompiled kernels: ``view_as_real``, real ``hypot``/``atan2``/``sin``/
``cos``/``mul`` and ``torch.complex``.  The targeted patches (torchaudio, s3tokenizer, whisper,
kokoro, chatterbox) are built on them.

Numerics:

* :func:`magnitude` uses ``hypot(re, im)``, which neither overflows for huge components nor
  underflows for tiny ones (``sqrt(re**2 + im**2)`` does both: above about 1.8e19 in float32
  the squares are ``inf``).  It handles ``inf``/``nan`` as C99 ``cabs`` does: an infinite
  component gives ``inf`` even when the other one is ``nan``.  On CPU it is bit-identical to
  complex64 ``abs``; for complex128 it can differ from the library kernel by one ulp.
* :func:`power` is ``re * re + im * im``: within two ulps of ``z.abs() ** 2`` and about three
  times faster on the CPU than either that or ``hypot(re, im) ** 2`` (the square root is never
  taken).  It overflows exactly where ``|z| ** 2`` itself exceeds the float range; results
  below the smallest normal float (``|z|`` under about 1e-19 in float32) are rounded in two
  steps and lose relative precision, far below the floors (1e-10 and up) that spectral
  features clamp to.  One deliberate difference: an infinite component paired with a ``nan``
  gives ``nan`` here and ``inf`` from ``abs() ** 2`` (restoring ``inf`` would cost more than
  the whole computation; use ``magnitude(z) ** 2`` where that case matters).
* :func:`phase` uses ``atan2(im, re)`` (sign of zero respected: ``phase(-1-0j) == -pi``).  It may
  differ from complex ``angle`` by an ulp (and is the more accurate of the two on CPU).
* :func:`polar` builds ``torch.complex(mag * cos(phase), mag * sin(phase))``.  ``torch.polar``
  gives the same forward values without the Jiterator, but its backward calls the jitted
  complex ``sgn``; this form's backward is real arithmetic.  Like ``torch.polar``, an infinite
  magnitude with a zero angle gives ``nan`` in the imaginary part (``inf * 0``).

Gradients: where an input requires grad, :func:`magnitude` and :func:`phase` use an
``autograd.Function`` whose derivative at ``z == 0`` is 0, like PyTorch's own ``abs`` and
``angle`` backward for complex inputs (plain ``hypot``/``atan2`` give ``nan`` there).  The
functions work under ``torch.vmap`` and the functorch transforms.

Real (non-complex) inputs go to the ordinary real kernels, which are never jitted.

Nothing here imports torch at module import time.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["magnitude", "phase", "polar", "power", "unit_phasor"]

_lock = threading.Lock()
_functions: dict[str, Any] = {}


def _autograd_functions() -> dict[str, Any]:
    """The zero-safe autograd Functions, created once (they need torch)."""
    if _functions:
        return _functions
    with _lock:
        if _functions:
            return _functions
        import torch

        class _Magnitude(torch.autograd.Function):
            """``hypot(re, im)`` whose gradient at the origin is 0 instead of ``nan``."""

            generate_vmap_rule = True

            @staticmethod
            def forward(re: Tensor, im: Tensor) -> Tensor:
                return torch.hypot(re, im)

            @staticmethod
            def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
                re, im = inputs
                ctx.save_for_backward(re, im, output)

            @staticmethod
            def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
                re, im, mag = ctx.saved_tensors
                zero = mag == 0
                scale = torch.where(zero, torch.zeros_like(grad), grad / torch.where(zero, 1, mag))
                return scale * re, scale * im

        class _Phase(torch.autograd.Function):
            """``atan2(im, re)`` whose gradient at the origin is 0 instead of ``nan``."""

            generate_vmap_rule = True

            @staticmethod
            def forward(re: Tensor, im: Tensor) -> Tensor:
                return torch.atan2(im, re)

            @staticmethod
            def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
                re, im = inputs
                ctx.save_for_backward(re, im)

            @staticmethod
            def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
                re, im = ctx.saved_tensors
                mag = torch.hypot(re, im)
                zero = mag == 0
                safe = torch.where(zero, 1, mag)
                # d/dre atan2(im, re) = -im / |z|^2 ; d/dim = re / |z|^2, divided twice by |z|
                # so that neither a huge nor a tiny |z| overflows on the way.
                scale = torch.where(zero, torch.zeros_like(grad), grad / safe)
                return -scale * (im / safe), scale * (re / safe)

        _functions["magnitude"] = _Magnitude
        _functions["phase"] = _Phase
    return _functions


def _parts(z: Tensor) -> tuple[Tensor, Tensor]:
    import torch

    pairs = torch.view_as_real(z)
    return pairs[..., 0], pairs[..., 1]


def _needs_autograd(z: Tensor) -> bool:
    import torch

    return torch.is_grad_enabled() and z.requires_grad


def magnitude(z: Tensor) -> Tensor:
    """``|z|`` for a complex tensor, computed as ``hypot(re, im)`` on real views.

    Same shape as *z*, with the matching real dtype (complex64 -> float32, complex32 ->
    float16).  A real tensor gets the ordinary real ``abs``.
    """
    if not z.is_complex():
        return z.abs()
    import torch

    re, im = _parts(z)
    if _needs_autograd(z):
        return _autograd_functions()["magnitude"].apply(re, im)  # type: ignore[no-any-return]
    return torch.hypot(re, im)


def power(z: Tensor) -> Tensor:
    """``|z| ** 2`` (the power spectrum of an STFT/FFT), Jiterator-free.

    Computed as ``re * re + im * im`` on the real views (see the module notes for accuracy);
    its gradient is ``2 * z``, 0 at the origin, like ``z.abs() ** 2``.  A real tensor gives
    ``z * z``.
    """
    if not z.is_complex():
        return z * z
    re, im = _parts(z)
    return re * re + im * im


def phase(z: Tensor) -> Tensor:
    """The argument of *z* in ``[-pi, pi]``, computed as ``atan2(im, re)``.

    A real tensor gets ``angle`` of a real tensor (0 or pi; never jitted).
    """
    if not z.is_complex():
        return z.angle()
    import torch

    re, im = _parts(z)
    if _needs_autograd(z):
        return _autograd_functions()["phase"].apply(re, im)  # type: ignore[no-any-return]
    return torch.atan2(im, re)


def polar(mag: Tensor, angle: Tensor) -> Tensor:
    """The complex tensor ``mag * exp(1j * angle)``, built from real ``cos``/``sin``.

    *mag* and *angle* are real tensors of the same dtype (broadcast together); the result is
    the matching complex dtype.  Stands in for ``torch.polar`` (whose backward is jitted) and for
    ``mag * torch.exp(1j * angle)`` (whose complex ``exp`` is jitted).
    """
    import torch

    _check_real("polar", mag=mag, angle=angle)
    return torch.complex(mag * torch.cos(angle), mag * torch.sin(angle))


def unit_phasor(angle: Tensor) -> Tensor:
    """``exp(1j * angle)`` for a real tensor *angle*, without complex ``exp``."""
    import torch

    _check_real("unit_phasor", angle=angle)
    return torch.complex(torch.cos(angle), torch.sin(angle))


def _check_real(where: str, **tensors: Tensor) -> None:
    for name, value in tensors.items():
        if value.is_complex():
            raise TypeError(
                f"spectral.{where}: {name} must be a real tensor, got {value.dtype}; "
                "pass magnitude(z) / phase(z) of a complex tensor instead"
            )
