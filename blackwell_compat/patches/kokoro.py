"""Kokoro (hexgrad/kokoro): the istftnet vocoder's ``TorchSTFT`` without complex Jiterator ops.

``kokoro.istftnet.TorchSTFT.transform`` takes ``torch.abs`` and ``torch.angle`` of a complex
STFT and ``TorchSTFT.inverse`` builds ``magnitude * torch.exp(phase * 1j)``: complex ``abs``,
``angle`` and ``exp`` are compiled by the Jiterator on CUDA, so every Kokoro forward dies on a
GPU whose architecture the installed NVRTC does not know.

Strategies:

``exact`` (default)
    ``TorchSTFT.transform`` / ``inverse`` are replaced on the class (instances built before
    ``apply()`` see it too).  For tensors on an affected device they compute the magnitude with
    ``hypot`` and the phase with ``atan2`` on ``view_as_real(stft)``, and rebuild the spectrum
    with ``torch.complex(mag * cos(phase), mag * sin(phase))`` before ``istft``: the same
    numbers as the complex path up to float rounding.  Other tensors take the original code.
``disable_complex``
    Kokoro's own ``CustomSTFT`` (conv1d based, no complex tensors at all): every ``Generator``
    built while the patch is active is built with ``disable_complex=True`` (this reaches
    ``KModel`` and ``KPipeline``), and ``TorchSTFT`` instances built earlier hand tensors on an
    affected device to a ``CustomSTFT`` twin.  Not numerically equivalent to the complex path
    (``replicate`` padding instead of ``reflect``, no window-envelope normalisation): see
    ``docs/patches/kokoro.md`` for the measured deviation.

:func:`convert` does the same to one model without ``apply()``, and :func:`restore` undoes it.
"""

from __future__ import annotations

import inspect
import types
import weakref
from typing import Any

from .. import spectral
from ..errors import ConfigError, DriftError
from ..toolkit import DeclaredPatch, Expect, Rewrite

EXACT = "exact"
DISABLE_COMPLEX = "disable_complex"
STRATEGIES = (EXACT, DISABLE_COMPLEX)
TARGET_MODULE = "kokoro.istftnet"

__all__ = [
    "DISABLE_COMPLEX",
    "EXACT",
    "STRATEGIES",
    "KokoroPatch",
    "convert",
    "restore",
]


# -- the real-valued rewrite -------------------------------------------------------------------


def exact_transform(stft: Any, input_data: Any) -> tuple[Any, Any]:
    """``TorchSTFT.transform`` without complex ``abs``/``angle``: (magnitude, phase)."""
    import torch

    spectrum = torch.stft(
        input_data,
        stft.filter_length,
        stft.hop_length,
        stft.win_length,
        window=stft.window.to(input_data.device),
        return_complex=True,
    )
    return spectral.magnitude(spectrum), spectral.phase(spectrum)


def exact_inverse(stft: Any, magnitude: Any, phase: Any) -> Any:
    """``TorchSTFT.inverse`` without complex ``exp``: ``istft`` of ``mag * e^(i*phase)``."""
    import torch

    waveform = torch.istft(
        spectral.polar(magnitude, phase),
        stft.filter_length,
        stft.hop_length,
        stft.win_length,
        window=stft.window.to(magnitude.device),
    )
    return waveform.unsqueeze(-2)


# -- the declarations -------------------------------------------------------------------------


def _generator_has_disable_complex(module: types.ModuleType) -> list[str]:
    cls = getattr(module, "Generator", None)
    if not isinstance(cls, type):
        return []  # reported by the Generator.__init__ declaration
    init = inspect.getattr_static(cls, "__init__", None)
    try:
        params = inspect.signature(init).parameters if init is not None else {}
    except (TypeError, ValueError):
        params = {}
    if "disable_complex" not in params:
        return [f"{module.__name__}.Generator.__init__ has no disable_complex parameter"]
    return []


def _via_twin(method: str) -> Any:
    """Builds ``TorchSTFT.<method>`` that hands the call to a ``CustomSTFT`` with the same
    sizes on the tensor's device (made once per ``TorchSTFT`` and device)."""

    def build(module: types.ModuleType, original: Any) -> Any:
        made: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()

        def through_twin(self: Any, tensor: Any, *rest: Any) -> Any:
            per_device = made.setdefault(self, {})
            twin = per_device.get(tensor.device)
            if twin is None:
                twin = _custom_like(module.CustomSTFT, self).to(tensor.device)
                per_device[tensor.device] = twin
            return getattr(twin, method)(tensor, *rest)

        return through_twin

    return build


def _forced_disable_complex(module: types.ModuleType, original_init: Any) -> Any:
    signature = inspect.signature(original_init)

    def generator_init(self: Any, *args: Any, **kwargs: Any) -> None:
        """Generator.__init__ forced to disable_complex=True (blackwell-compat)"""
        bound = signature.bind(self, *args, **kwargs)
        bound.arguments["disable_complex"] = True
        original_init(*bound.args, **bound.kwargs)

    return generator_init


_M = TARGET_MODULE
_TRANSFORM = ("self", "input_data")
_TRANSFORM_USES = ("stft", "abs", "angle", "window")
_INVERSE = ("self", "magnitude", "phase")
_INVERSE_USES = ("istft", "exp", "window")

#: What both strategies rely on in ``kokoro.istftnet``, and what each installs.
DECLARATIONS: tuple[Rewrite | Expect, ...] = (
    Expect(
        _M,
        "TorchSTFT.__init__",
        params=("self", "filter_length", "hop_length", "win_length", "window"),
        names=("filter_length", "hop_length", "win_length", "window"),
    ),
    Rewrite(
        Expect(_M, "TorchSTFT.transform", params=_TRANSFORM, names=_TRANSFORM_USES),
        rewrite=exact_transform,
        on="input_data",
        strategies=(EXACT,),
    ),
    Rewrite(
        Expect(_M, "TorchSTFT.inverse", params=_INVERSE, names=_INVERSE_USES),
        rewrite=exact_inverse,
        on="magnitude",
        strategies=(EXACT,),
        note="TorchSTFT.transform/inverse: real-valued on affected devices (strategy exact)",
    ),
    Rewrite(
        Expect(_M, "TorchSTFT.transform", params=_TRANSFORM, names=_TRANSFORM_USES),
        build=_via_twin("transform"),
        on="input_data",
        strategies=(DISABLE_COMPLEX,),
    ),
    Rewrite(
        Expect(_M, "TorchSTFT.inverse", params=_INVERSE, names=_INVERSE_USES),
        build=_via_twin("inverse"),
        on="magnitude",
        strategies=(DISABLE_COMPLEX,),
    ),
    Rewrite(
        Expect(_M, "Generator.__init__", names=("CustomSTFT", "TorchSTFT")),
        build=_forced_disable_complex,
        always=True,
        strategies=(DISABLE_COMPLEX,),
        note=(
            "Generator built with disable_complex=True (CustomSTFT); TorchSTFT of models built "
            "earlier uses a CustomSTFT twin on affected devices (strategy disable_complex, "
            "not numerically equivalent)"
        ),
    ),
    Expect(_M, check=_generator_has_disable_complex),
    Expect(_M, "CustomSTFT.transform"),
    Expect(_M, "CustomSTFT.inverse"),
)


def drift_problems(module: types.ModuleType) -> list[str]:
    """How ``kokoro.istftnet`` differs from what both strategies were written for."""
    return KokoroPatch().check(module)


def _check_strategy(strategy: str, source: str) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"{source}: unknown kokoro strategy {strategy!r}; use one of {', '.join(STRATEGIES)}"
        )


# -- the patch -------------------------------------------------------------------------------


class KokoroPatch(DeclaredPatch):
    name = "kokoro"
    summary = "Kokoro istftnet TorchSTFT without complex abs/angle/exp (Jiterator-free vocoder)"
    distribution = "kokoro"
    supported = ">=0.8.4,<0.10"
    requires_affected = True
    strategies = STRATEGIES
    docs = "docs/patches/kokoro.md"
    declarations = DECLARATIONS


def _custom_like(custom_cls: Any, stft: Any) -> Any:
    return custom_cls(
        filter_length=stft.filter_length, hop_length=stft.hop_length, win_length=stft.win_length
    )


# -- convert / restore for one model -----------------------------------------------------------

# CustomSTFT module put in by convert() -> the TorchSTFT it replaced.
_replaced: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_exact_classes: dict[type, type] = {}


def _exact_class(base: type) -> type:
    """A subclass of *base* (kokoro's TorchSTFT) whose transform/inverse are real-valued."""
    cls = _exact_classes.get(base)
    if cls is None:

        def transform(self: Any, input_data: Any) -> Any:
            return exact_transform(self, input_data)

        def inverse(self: Any, magnitude: Any, phase: Any) -> Any:
            return exact_inverse(self, magnitude, phase)

        cls = type(
            "ExactTorchSTFT",
            (base,),
            {
                "transform": transform,
                "inverse": inverse,
                "__module__": __name__,
                "__qualname__": "ExactTorchSTFT",
                "__doc__": "kokoro TorchSTFT with real-valued transform/inverse (blackwell-compat)",
            },
        )
        _exact_classes[base] = cls
    return cls


def __getattr__(name: str) -> Any:
    # ``ExactTorchSTFT`` exists only once kokoro is importable; building it lazily keeps this
    # module free of torch imports and lets pickle find converted modules by name.
    if name == "ExactTorchSTFT":
        from kokoro import istftnet

        return _exact_class(istftnet.TorchSTFT)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _istftnet_checked() -> types.ModuleType:
    import importlib

    module = importlib.import_module(TARGET_MODULE)
    problems = drift_problems(module)
    if problems:
        raise DriftError(
            "blackwell-compat kokoro.convert: kokoro.istftnet no longer looks like what the "
            "patch was written for: " + "; ".join(problems)
        )
    return module


def _module_device(module: Any) -> Any:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


def convert(model: Any, strategy: str = EXACT) -> Any:
    """Make an already built Kokoro model Jiterator-free, without ``apply()``; returns *model*.

    Every ``TorchSTFT`` inside *model* (a ``KModel``, ``Decoder`` or ``Generator``) is changed:

    - ``strategy="exact"``: its class becomes :class:`ExactTorchSTFT` (a ``TorchSTFT``
      subclass with the real-valued transform/inverse, used on every device);
    - ``strategy="disable_complex"``: it is replaced by Kokoro's ``CustomSTFT`` with the same
      sizes, on the device of its parent module (not numerically equivalent).

    Converting again with another strategy first undoes the previous conversion.  The state
    dict is unchanged by ``exact``; ``disable_complex`` adds ``CustomSTFT``'s buffers.
    :func:`restore` puts the original ``TorchSTFT`` objects back.

    Raises:
        ConfigError: unknown *strategy*.
        DriftError: the installed kokoro no longer has the code this was written for.
        TypeError: *model* is not a ``torch.nn.Module``.
    """
    _check_strategy(strategy, "kokoro.convert(strategy=...)")
    module = _istftnet_checked()
    _require_module(model, "convert")
    restore(model)
    base = module.TorchSTFT
    if strategy == EXACT:
        exact_cls = _exact_class(base)
        for sub in model.modules():
            if type(sub) is base:
                sub.__class__ = exact_cls
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is base:
                replacement = _custom_like(module.CustomSTFT, child)
                device = _module_device(parent)
                if device is not None:
                    replacement = replacement.to(device)
                setattr(parent, name, replacement)
                _replaced[replacement] = child
    return model


def restore(model: Any) -> Any:
    """Undo :func:`convert` on *model* (the original ``TorchSTFT`` objects come back)."""
    _require_module(model, "restore")
    exact = set(_exact_classes.values())
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            original = _replaced.pop(child, None)
            if original is not None:
                setattr(parent, name, original)
    for sub in model.modules():
        if type(sub) in exact:
            sub.__class__ = type(sub).__mro__[1]
    return model


def _require_module(model: Any, what: str) -> None:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"blackwell_compat.patches.kokoro.{what}: expected a torch.nn.Module (a KModel), "
            f"got {type(model).__name__}"
        )
