"""torchaudio: feature extraction and phase reconstruction without complex Jiterator kernels.

Call sites rewritten (torchaudio 2.x):

``torchaudio.compliance.kaldi.fbank`` / ``spectrogram``
    ``torch.fft.rfft(frames).abs()``: complex ``abs`` is compiled by the Jiterator on CUDA.
    ``mfcc`` calls ``fbank`` through the module global, so it is covered by the ``fbank``
    rewrite (and routed whole to the CPU under the ``cpu`` strategy).  pyannote.audio's
    WeSpeaker embedding (WhisperX diarization) stores ``functools.partial(kaldi.fbank, ...)``
    in its ``__init__`` and calls it under ``torch.vmap``: the rewrite replaces the function's
    code in place, so partials made before ``apply()`` run it too, and it is vmap-safe.
``torchaudio.functional.spectrogram``
    ``spec.abs()`` / ``spec.abs().pow(power)`` for ``power`` not ``None``; used by
    ``transforms.Spectrogram``, ``MelSpectrogram``, ``MFCC``, ``spectral_centroid``.  With
    ``power=None`` the complex spectrum is returned untouched: it needs no Jiterator kernel, and
    what the caller does with it afterwards is the caller's own call site (the ``torch`` op
    guard's job).
``torchaudio.functional.griffinlim`` (``transforms.GriffinLim``)
    normalises phasors with complex ``abs``.
``torchaudio.functional.phase_vocoder`` (``transforms.TimeStretch``, ``pitch_shift``)
    complex ``angle`` and ``abs``.

``transforms.*`` call these through the module attribute (``F.spectrogram``), and torchaudio's
own modules call them through their module globals: the in-place replacement reaches all of
them, and references captured anywhere before ``apply()``.

Strategies:

``real`` (default)
    On an affected device, compute magnitudes with ``hypot`` and phases with ``atan2`` on
    ``view_as_real`` of the spectrum, power spectra as ``re * re + im * im``
    (:mod:`blackwell_compat.spectral`); everything else is torchaudio's own code.  Results
    agree with the complex path to float rounding (``assert_close`` defaults); power spectra are
    cheaper to compute this way than with complex ``abs``.
``cpu``
    On an affected device, move the inputs to the CPU, run torchaudio's own function there and
    move the result back: the reference kernels, bit for bit, at the price of the transfers.

Tensors on other devices (the CPU outside emulation, GPUs that are not affected) always reach
the original functions.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from typing import Any

from .. import spectral
from ..toolkit import AS_REWRITE, DeclaredPatch, Expect, Rewrite

REAL = "real"
CPU = "cpu"
KALDI = "torchaudio.compliance.kaldi"
FUNCTIONAL = "torchaudio.functional.functional"

__all__ = ["CPU", "REAL", "TorchaudioPatch"]


# -- what the drift check compares --------------------------------------------------------------
# The rewrites themselves serve as the signature models: the check compares their parameters,
# defaults included, with the installed torchaudio's (kaldi), or their parameter names (functional).

# torchaudio's kaldi helpers the rewrites call, with the parameters they are called with (in this
# order: ``_kaldi_frames`` passes the options by these names).
_KALDI_HELPERS: dict[str, tuple[str, ...]] = {
    "_get_waveform_and_window_properties": (
        "waveform",
        "channel",
        "sample_frequency",
        "frame_shift",
        "frame_length",
        "round_to_power_of_two",
        "preemphasis_coefficient",
    ),
    "_get_window": (
        "waveform",
        "padded_window_size",
        "window_size",
        "window_shift",
        "window_type",
        "blackman_coeff",
        "snip_edges",
        "raw_energy",
        "energy_floor",
        "dither",
        "remove_dc_offset",
        "preemphasis_coefficient",
    ),
    "get_mel_banks": (
        "num_bins",
        "window_length_padded",
        "sample_freq",
        "low_freq",
        "high_freq",
        "vtln_low",
        "vtln_high",
        "vtln_warp_factor",
    ),
    "_get_epsilon": ("device", "dtype"),
    "_subtract_column_mean": ("tensor", "subtract_mean"),
}

# Names each target must still use: the complex call we rewrite and the helpers we share.
_KALDI_USES = {
    "spectrogram": ("rfft", "abs", "_get_window", "_get_waveform_and_window_properties"),
    "fbank": ("rfft", "abs", "_get_window", "_get_waveform_and_window_properties", "get_mel_banks"),
    "mfcc": ("fbank",),
}

_FUNCTIONAL_USES = {
    "spectrogram": ("stft", "abs"),
    "griffinlim": ("stft", "istft", "abs", "_get_complex_dtype"),
    "phase_vocoder": ("angle", "abs", "polar", "cumsum", "index_select"),
}


# -- kaldi rewrites ---------------------------------------------------------------------------


def _kaldi_frames(
    kaldi: types.ModuleType, waveform: Any, o: dict[str, Any]
) -> tuple[Any, Any, int] | None:
    """Windowed frames, their log energies and the FFT size; ``None`` when the signal is
    shorter than ``min_duration``.  Uses torchaudio's own framing code unchanged."""
    framing = _KALDI_HELPERS["_get_waveform_and_window_properties"]
    signal, shift, size, fft_size = kaldi._get_waveform_and_window_properties(
        waveform, *(o[name] for name in framing[1:])
    )
    if len(signal) < o["min_duration"] * o["sample_frequency"]:
        return None
    # _get_window(waveform, padded_window_size, window_size, window_shift, <options by name>)
    options = (o[name] for name in _KALDI_HELPERS["_get_window"][4:])
    frames, log_energy = kaldi._get_window(signal, fft_size, size, shift, *options)
    return frames, log_energy, fft_size


def _make_kaldi_spectrogram(kaldi: types.ModuleType, original: Any) -> Callable[..., Any]:
    def real_spectrogram(
        waveform: Any,
        blackman_coeff: float = 0.42,
        channel: int = -1,
        dither: float = 0.0,
        energy_floor: float = 1.0,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        min_duration: float = 0.0,
        preemphasis_coefficient: float = 0.97,
        raw_energy: bool = True,
        remove_dc_offset: bool = True,
        round_to_power_of_two: bool = True,
        sample_frequency: float = 16000.0,
        snip_edges: bool = True,
        subtract_mean: bool = False,
        window_type: str = "povey",
    ) -> Any:
        import torch

        floor = kaldi._get_epsilon(waveform.device, waveform.dtype)
        framed = _kaldi_frames(kaldi, waveform, locals())
        if framed is None:
            return torch.empty(0)  # what torchaudio returns for a too-short signal
        frames, log_energy, _ = framed
        log_power = torch.max(spectral.power(torch.fft.rfft(frames)), floor).log()
        log_power[:, 0] = log_energy
        return kaldi._subtract_column_mean(log_power, subtract_mean)

    return real_spectrogram


def _make_kaldi_fbank(kaldi: types.ModuleType, original: Any) -> Callable[..., Any]:
    def real_fbank(
        waveform: Any,
        blackman_coeff: float = 0.42,
        channel: int = -1,
        dither: float = 0.0,
        energy_floor: float = 1.0,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        high_freq: float = 0.0,
        htk_compat: bool = False,
        low_freq: float = 20.0,
        min_duration: float = 0.0,
        num_mel_bins: int = 23,
        preemphasis_coefficient: float = 0.97,
        raw_energy: bool = True,
        remove_dc_offset: bool = True,
        round_to_power_of_two: bool = True,
        sample_frequency: float = 16000.0,
        snip_edges: bool = True,
        subtract_mean: bool = False,
        use_energy: bool = False,
        use_log_fbank: bool = True,
        use_power: bool = True,
        vtln_high: float = -500.0,
        vtln_low: float = 100.0,
        vtln_warp: float = 1.0,
        window_type: str = "povey",
    ) -> Any:
        import torch

        device, dtype = waveform.device, waveform.dtype
        framed = _kaldi_frames(kaldi, waveform, locals())
        if framed is None:
            return torch.empty(0, device=device, dtype=dtype)
        frames, log_energy, fft_size = framed
        fft = torch.fft.rfft(frames)
        spectrum = spectral.power(fft) if use_power else spectral.magnitude(fft)
        banks, _ = kaldi.get_mel_banks(
            num_mel_bins,
            fft_size,
            sample_frequency,
            low_freq,
            high_freq,
            vtln_low,
            vtln_high,
            vtln_warp,
        )
        # The banks cover fft_size // 2 bins; the Nyquist bin gets a zero weight.
        banks = torch.nn.functional.pad(banks.to(device=device, dtype=dtype), (0, 1), value=0)
        energies = torch.mm(spectrum, banks.T)
        if use_log_fbank:
            energies = torch.max(energies, kaldi._get_epsilon(device, dtype)).log()
        if use_energy:
            column = log_energy.unsqueeze(1)
            parts = (energies, column) if htk_compat else (column, energies)
            energies = torch.cat(parts, dim=1)
        return kaldi._subtract_column_mean(energies, subtract_mean)

    return real_fbank


# -- torchaudio.functional rewrites -----------------------------------------------------------


def _real_spectrogram(functional: types.ModuleType, original: Any) -> Callable[..., Any]:
    def spectrogram(
        waveform: Any,
        pad: int,
        window: Any,
        n_fft: int,
        hop_length: int,
        win_length: int,
        power: float | None,
        normalized: bool | str,
        center: bool = True,
        pad_mode: str = "reflect",
        onesided: bool = True,
        return_complex: bool | None = None,
    ) -> Any:
        # torchaudio's own code up to the complex spectrum (padding, batching, normalisation:
        # none of it is jitted), then the magnitude on real views.
        spec = original(
            waveform,
            pad,
            window,
            n_fft,
            hop_length,
            win_length,
            None,
            normalized,
            center,
            pad_mode,
            onesided,
            return_complex,
        )
        if power is None:
            return spec
        if power == 2.0:
            return spectral.power(spec)
        mag = spectral.magnitude(spec)
        return mag if power == 1.0 else mag.pow(power)

    return spectrogram


def _real_griffinlim(functional: types.ModuleType, original: Any) -> Callable[..., Any]:
    def griffinlim(
        specgram: Any,
        window: Any,
        n_fft: int,
        hop_length: int,
        win_length: int,
        power: float,
        n_iter: int,
        momentum: float,
        length: int | None,
        rand_init: bool,
    ) -> Any:
        import torch

        if not 0 <= momentum < 1 or specgram.dtype not in (torch.float32, torch.float64):
            # Invalid arguments: torchaudio raises its own error before any complex op.
            # Half precision: complex32 arithmetic is jitted throughout; left to the op guard.
            return original(
                specgram, window, n_fft, hop_length, win_length, power, n_iter, momentum,
                length, rand_init,
            )  # fmt: skip
        decay = momentum / (1 + momentum)
        batch = specgram.shape[:-2]
        mags = specgram.reshape((-1, *specgram.shape[-2:])).pow(1 / power)
        cdtype = functional._get_complex_dtype(mags.dtype)
        if rand_init:
            phasors = torch.rand(mags.size(), dtype=cdtype, device=mags.device)
        else:
            phasors = torch.full(mags.size(), 1, dtype=cdtype, device=mags.device)
        frames: dict[str, Any] = {
            "n_fft": n_fft,
            "hop_length": hop_length,
            "win_length": win_length,
        }
        previous = torch.tensor(0.0, dtype=mags.dtype, device=mags.device)
        for _ in range(n_iter):
            estimate = torch.istft(mags * phasors, window=window, length=length, **frames)
            rebuilt = torch.stft(
                input=estimate,
                window=window,
                center=True,
                pad_mode="reflect",
                normalized=False,
                onesided=True,
                return_complex=True,
                **frames,
            )
            phasors = rebuilt
            if decay:
                phasors = phasors - previous.mul_(decay)
            phasors = phasors.div(spectral.magnitude(phasors).add(1e-16))
            previous = rebuilt
        waveform = torch.istft(mags * phasors, window=window, length=length, **frames)
        return waveform.reshape(batch + waveform.shape[-1:])

    return griffinlim


def _real_phase_vocoder(functional: types.ModuleType, original: Any) -> Callable[..., Any]:
    def phase_vocoder(complex_specgrams: Any, rate: float, phase_advance: Any) -> Any:
        import torch

        if rate == 1.0 or not complex_specgrams.is_complex():
            return original(complex_specgrams, rate, phase_advance)
        shape = complex_specgrams.shape
        spec = complex_specgrams.reshape((-1, *shape[-2:]))
        real_dtype = torch.real(spec).dtype
        steps = torch.arange(0, spec.size(-1), rate, device=spec.device, dtype=real_dtype)
        weights = steps % 1.0
        start = spectral.phase(spec[..., :1])
        # Two zero frames at the end so that frame index + 1 always exists.
        spec = torch.nn.functional.pad(spec, [0, 2])
        left = spec.index_select(-1, steps.long())
        right = spec.index_select(-1, (steps + 1).long())
        delta = spectral.phase(right) - spectral.phase(left) - phase_advance
        two_pi = 2 * math.pi
        delta = delta - two_pi * torch.round(delta / two_pi)  # wrap into [-pi, pi]
        increments = torch.cat([start, (delta + phase_advance)[..., :-1]], dim=-1)
        accumulated = torch.cumsum(increments, -1)
        mag = weights * spectral.magnitude(right) + (1 - weights) * spectral.magnitude(left)
        stretched = spectral.polar(mag, accumulated)
        return stretched.reshape(shape[:-2] + stretched.shape[1:])

    return phase_vocoder


# -- the declarations -------------------------------------------------------------------------
# Calls whose first argument (the tensor) lives on an affected device go to the rewrite or, under
# the ``cpu`` strategy, to torchaudio's own function run on the CPU; every other call reaches the
# original.  The rewrites' parameters are those of the targets: the drift check compares them,
# defaults included for kaldi, names for functional.


def _kaldi(attr: str, build: Callable[..., Any]) -> Rewrite:
    target = Expect(KALDI, attr, signature=AS_REWRITE, names=_KALDI_USES[attr])
    return Rewrite(target, build=build, round_trip=(CPU,))


def _functional(attr: str, build: Callable[..., Any]) -> Rewrite:
    target = Expect(FUNCTIONAL, attr, params=AS_REWRITE, names=_FUNCTIONAL_USES[attr])
    return Rewrite(target, build=build, round_trip=(CPU,))


class TorchaudioPatch(DeclaredPatch):
    name = "torchaudio"
    summary = (
        "kaldi fbank/spectrogram/mfcc, functional.spectrogram, griffinlim and phase_vocoder "
        "without complex abs/angle (also pyannote/WhisperX fbank partials)"
    )
    distribution = "torchaudio"
    supported = ">=2.6,<3"
    requires_affected = True
    strategies = (REAL, CPU)
    docs = "docs/patches/torchaudio.md"
    declarations = (
        _kaldi("spectrogram", _make_kaldi_spectrogram),
        _kaldi("fbank", _make_kaldi_fbank),
        Rewrite(
            Expect(KALDI, "mfcc", names=_KALDI_USES["mfcc"]),
            round_trip=(CPU,),
            strategies=(CPU,),
            skipped_note="kaldi.mfcc is covered through its call to the rewritten kaldi.fbank",
        ),
        *(Expect(KALDI, attr, params=params) for attr, params in _KALDI_HELPERS.items()),
        _functional("spectrogram", _real_spectrogram),
        _functional("griffinlim", _real_griffinlim),
        _functional("phase_vocoder", _real_phase_vocoder),
        Expect(FUNCTIONAL, "_get_complex_dtype", params=("real_dtype",)),
    )
