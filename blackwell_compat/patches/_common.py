"""Helpers shared by the targeted patches: argument lookup, CPU routing, signature checks.

Drift checks on names and parameter lists live in :mod:`._drift`; this module adds the check
that a rewrite which re-states a function's defaults still agrees with the target's defaults,
and the machinery of the ``cpu`` strategies (run the reference implementation on the CPU,
outside emulation, and move the result back).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .. import devices, emulation
from ._drift import function_problems


def argument(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    """The argument at position *index* or keyword *name* (``None`` when absent)."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


def targeted(value: Any) -> bool:
    """Whether *value* is a tensor on a device whose Jiterator kernels must be avoided."""
    device = getattr(value, "device", None)
    if device is None or not hasattr(value, "is_complex"):
        return False
    return devices.device_targeted(device)


@contextmanager
def outside_emulation() -> Iterator[None]:
    """Run the block as plain CPU work, even while ``bc.emulate()`` is active.

    The ``cpu`` strategies compute with the reference kernels on the CPU.  Under emulation the
    "device" already is the CPU, and the reference computation must not hit the emulated
    failure: it is what a real machine's CPU would run.  Only the calling thread is affected.
    """
    with emulation.suspended():
        yield


def call_on_cpu(
    fn: Callable[..., Any], device: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    """``fn(*args, **kwargs)`` with every tensor on *device* moved to the CPU first, computed
    outside emulation, and every tensor in the result moved back to *device*.

    For a CPU *device* (emulation) nothing moves: the call simply runs the reference kernels.
    Autograd flows through the copies (``Tensor.to`` is differentiable).
    """
    import torch

    cpu = torch.device("cpu")
    on_cpu = device.type == "cpu"
    if not on_cpu:
        args = tuple(_move_from(v, device, cpu) for v in args)
        kwargs = {k: _move_from(v, device, cpu) for k, v in kwargs.items()}
    elif torch.is_grad_enabled() and _grad_inputs(args, kwargs):
        return _with_reference_backward(fn, args, kwargs)
    with outside_emulation():
        result = fn(*args, **kwargs)
    return result if on_cpu else _move_from(result, cpu, device)


def _grad_inputs(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[tuple[int | str, Any]]:
    """Top-level tensor arguments that require grad, with their position or keyword."""
    import torch

    keyed: list[tuple[int | str, Any]] = [*enumerate(args), *kwargs.items()]
    return [(k, v) for k, v in keyed if isinstance(v, torch.Tensor) and v.requires_grad]


_reference_function: list[Any] = []


def _with_reference_backward(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    """Run *fn* outside emulation, backward pass included.

    With a real GPU the ``cpu`` strategy's backward runs on the CPU, which is never affected.
    Under emulation the CPU plays the affected GPU, so autograd would replay the complex
    kernels' backward (``sgn``...) inside the emulated failure; this wraps the call in an
    ``autograd.Function`` whose backward differentiates the reference graph outside emulation.
    """
    import torch

    if not _reference_function:

        class _ReferenceOnCpu(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, call: Callable[[list[Any]], Any], *inputs: Any) -> Any:
                with torch.enable_grad():
                    leaves = [x.detach().requires_grad_() for x in inputs]
                    with outside_emulation():
                        out = call(leaves)
                if not isinstance(out, torch.Tensor):
                    raise TypeError("the cpu strategy differentiates single-tensor results only")
                ctx.leaves = leaves
                ctx.out = out
                return out.detach()

            @staticmethod
            def backward(ctx: Any, grad: Any) -> Any:
                with outside_emulation():
                    grads = torch.autograd.grad(ctx.out, ctx.leaves, grad, allow_unused=True)
                return (None, *grads)

        _reference_function.append(_ReferenceOnCpu)

    inputs = _grad_inputs(args, kwargs)

    def call(leaves: list[Any]) -> Any:
        new_args = list(args)
        new_kwargs = dict(kwargs)
        for (key, _), leaf in zip(inputs, leaves, strict=True):
            if isinstance(key, int):
                new_args[key] = leaf
            else:
                new_kwargs[key] = leaf
        return fn(*new_args, **new_kwargs)

    return _reference_function[0].apply(call, *(value for _, value in inputs))


def _move_from(value: Any, source: Any, target: Any) -> Any:
    """Move tensors that live on *source* to *target* (leave tensors elsewhere alone)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(target) if value.device == source else value
    if isinstance(value, list):
        return [_move_from(v, source, target) for v in value]
    if isinstance(value, tuple):
        moved = [_move_from(v, source, target) for v in value]
        return type(value)(*moved) if hasattr(value, "_fields") else tuple(moved)
    return value


def defaults_problems(target: Any, model: Callable[..., Any], where: str) -> list[str]:
    """Compare the parameters of *target* with those of *model* (our rewrite): names, order,
    kinds and default values.  Annotations are ignored (they vary between releases without
    changing behaviour)."""
    try:
        actual = inspect.signature(target).parameters
        expected = inspect.signature(model).parameters
    except (TypeError, ValueError):
        return [f"{where} has no readable signature"]
    problems: list[str] = []
    actual_names = list(actual)
    expected_names = list(expected)
    if actual_names != expected_names:
        problems.append(
            f"{where} takes ({', '.join(actual_names)}), expected ({', '.join(expected_names)})"
        )
        return problems
    for name, param in expected.items():
        found = actual[name]
        if found.kind != param.kind:
            problems.append(f"{where}: parameter {name} is now {found.kind.description}")
        if not _same_default(found.default, param.default):
            shown = "none" if found.default is inspect.Parameter.empty else repr(found.default)
            problems.append(
                f"{where}: default of {name} is {shown}, expected "
                f"{'none' if param.default is inspect.Parameter.empty else repr(param.default)}"
            )
    return problems


def _same_default(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:
        return False


def constants_problems(fn: Any, wanted: tuple[Any, ...], where: str) -> list[str]:
    """Report literal constants (``400``, ``1e-10``...) that *fn*'s body no longer contains.

    Constants live in the code object's ``co_consts`` on every Python version, so this check
    survives bytecode changes."""
    import types

    code = getattr(inspect.unwrap(fn), "__code__", None)
    if not isinstance(code, types.CodeType):
        return [f"{where} is not a Python function"]
    found: list[Any] = []
    stack = [code]
    while stack:
        current = stack.pop()
        for const in current.co_consts:
            if isinstance(const, types.CodeType):
                stack.append(const)
            else:
                found.append(const)
    missing = [c for c in wanted if not any(type(f) is type(c) and f == c for f in found)]
    if missing:
        return [f"{where} no longer uses the constant(s) {', '.join(map(repr, missing))}"]
    return []


# -- the openai-whisper style log-Mel spectrogram (whisper, s3tokenizer, chatterbox) ----------


def whisper_log_mel(
    audio: Any, filters: Any, *, n_fft: int, hop_length: int, padding: int = 0
) -> Any:
    """``log10`` Mel spectrogram as openai-whisper computes it, without complex ``abs``.

    *audio* is a tensor already on the target device; *filters* the ``(n_mels, n_fft//2+1)``
    Mel matrix on that device.  Steps (each as in whisper's ``audio.log_mel_spectrogram``):
    right zero-padding, periodic Hann window, STFT, power of every frame but the last, Mel
    projection, ``log10`` clamped at 1e-10, dynamic range limited to 8 (i.e. 80 dB) below the
    maximum, then ``(x + 4) / 4``.  The power is :func:`blackwell_compat.spectral.power`
    instead of ``stft.abs() ** 2``.
    """
    import torch

    from .. import spectral

    if padding > 0:
        audio = torch.nn.functional.pad(audio, (0, padding))
    window = torch.hann_window(n_fft).to(audio.device)
    stft = torch.stft(audio, n_fft, hop_length, window=window, return_complex=True)
    power = spectral.power(stft[..., :-1])
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def log_mel_problems(
    module: Any,
    *,
    where: str,
    filters: str,
    signature: Callable[..., Any],
    constants: tuple[Any, ...],
) -> list[str]:
    """Drift check of an openai-whisper style ``log_mel_spectrogram`` in *module* (named *where*
    in the messages), for :class:`LogMelRouter`: the names its body uses, its parameters and
    defaults against *signature*, the literal *constants* it must still contain, the Mel filter
    function *filters* ``(device, n_mels)`` and ``load_audio``."""
    function = f"{where}.log_mel_spectrogram"
    problems = function_problems(
        module,
        "log_mel_spectrogram",
        where=where,
        names=("stft", "abs", filters, "hann_window", "log10", "load_audio"),
    )
    target = getattr(module, "log_mel_spectrogram", None)
    if target is None:
        return problems
    problems += defaults_problems(target, signature, function)
    problems += constants_problems(target, constants, function)
    problems += function_problems(module, filters, where=where, params=("device", "n_mels"))
    problems += function_problems(module, "load_audio", where=where, names=())
    return problems


_UNSET: Any = object()


class LogMelRouter:
    """Replacement for an openai-whisper style ``log_mel_spectrogram(audio, n_mels, padding,
    device)`` function (whisper, s3tokenizer).

    The input is resolved the way the target does it (a path is loaded with the module's
    ``load_audio``; whisper also converts NumPy arrays); the device that decides is the
    ``device`` argument, else the audio's.  Affected devices get :func:`whisper_log_mel`; every
    other call goes to the original function (with the audio already loaded).
    """

    def __init__(
        self,
        module: Any,
        *,
        filters: Callable[[Any, int], Any],
        n_fft: int,
        hop_length: int,
        default_n_mels: int,
        convert_numpy: bool,
    ) -> None:
        self.module = module
        self.filters = filters
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.default_n_mels = default_n_mels
        self.convert_numpy = convert_numpy
        self.original: Callable[..., Any] | None = None

    def install(self, ctx: Any, owner: Any, attr: str) -> None:
        self.original = ctx.replace_function(owner, attr, self)
        self.__wrapped__ = self.original  # signature()/getsource() of the target stay its own

    def __call__(
        self, audio: Any, n_mels: Any = _UNSET, padding: int = 0, device: Any = None
    ) -> Any:
        import torch

        original = self.original
        assert original is not None
        if n_mels is _UNSET:
            n_mels = self.default_n_mels
        if not torch.is_tensor(audio):
            if isinstance(audio, str):
                audio = self.module.load_audio(audio)
            elif self.convert_numpy:
                audio = torch.from_numpy(audio)
            else:
                return original(audio, n_mels, padding, device)
        where = torch.device(device) if device is not None else audio.device
        if not devices.device_targeted(where):
            return original(audio, n_mels, padding, device)
        if device is not None:
            audio = audio.to(device)
        filters = self.filters(audio.device, n_mels)
        return whisper_log_mel(
            audio, filters, n_fft=self.n_fft, hop_length=self.hop_length, padding=padding
        )
