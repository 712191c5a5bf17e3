"""Chatterbox (resemble-ai/chatterbox-tts): its speech features without complex Jiterator ops.

Three call sites break on a GPU whose architecture the installed NVRTC does not know:

- ``chatterbox.models.s3tokenizer.s3tokenizer.S3Tokenizer.log_mel_spectrogram``:
  ``stft[..., :-1].abs() ** 2`` (complex ``abs``);
- ``chatterbox.models.s3gen.xvector.extract_feature`` (the CAMPPlus speaker encoder's input):
  ``torchaudio.compliance.kaldi.fbank``, which takes ``torch.fft.rfft(...).abs()``;
- the ``resemble-perth`` watermarker's ``cx_to_magphase`` (``torch.angle``, complex ``abs``) and
  ``magphase_to_cx`` (``torch.exp(1j * phase)``), reached from ``AudioProcessor`` when a
  ``PerthImplicitWatermarker`` is built with ``device="cuda"`` (Chatterbox itself builds it on
  the CPU, where nothing fails).

Each replacement sends tensors on an affected device to a real-valued rewrite built on
:mod:`blackwell_compat.spectral` (power ``re*re + im*im``, magnitude ``hypot`` and phase
``atan2`` on ``view_as_real``; ``torch.complex(m * cos, m * sin)``) and every other tensor to
the original code.  The fbank rewrite does not rely on the ``torchaudio`` patch.  The results
match the complex path to float32 rounding (within a few ulps), not bit for bit.
"""

from __future__ import annotations

import inspect
import types
from typing import Any

from .. import spectral
from ..toolkit import DeclaredPatch, Expect, Rewrite, function_problems, is_swapped

S3TOKENIZER_MODULE = "chatterbox.models.s3tokenizer.s3tokenizer"
XVECTOR_MODULE = "chatterbox.models.s3gen.xvector"
PERTH_MODULE = "perth.perth_net.perth_net_implicit.utils"
PERTH_DISTRIBUTION = "resemble-perth"
PERTH_SUPPORTED = ">=1.0,<1.1"
KALDI_MODULE = "torchaudio.compliance.kaldi"

# ``torchaudio.compliance.kaldi.fbank`` defaults that ``extract_feature`` relies on (it passes
# only ``num_mel_bins``); the drift check compares them with the installed torchaudio.
KALDI_FBANK_DEFAULTS: dict[str, Any] = {
    "blackman_coeff": 0.42,
    "channel": -1,
    "dither": 0.0,
    "energy_floor": 1.0,
    "frame_length": 25.0,
    "frame_shift": 10.0,
    "high_freq": 0.0,
    "htk_compat": False,
    "low_freq": 20.0,
    "min_duration": 0.0,
    "preemphasis_coefficient": 0.97,
    "raw_energy": True,
    "remove_dc_offset": True,
    "round_to_power_of_two": True,
    "sample_frequency": 16000.0,
    "snip_edges": True,
    "subtract_mean": False,
    "use_energy": False,
    "use_log_fbank": True,
    "use_power": True,
    "vtln_high": -500.0,
    "vtln_low": 100.0,
    "vtln_warp": 1.0,
    "window_type": "povey",
}

__all__ = [
    "ChatterboxPatch",
    "kaldi_fbank_real",
    "log_mel_spectrogram_real",
]


# -- real-valued rewrites (on blackwell_compat.spectral) ---------------------------------------


def log_mel_spectrogram_real(tokenizer: Any, audio: Any, padding: int = 0, *, hop: int) -> Any:
    """Chatterbox ``S3Tokenizer.log_mel_spectrogram`` with a real-valued power spectrum."""
    import torch
    import torch.nn.functional as F

    if not torch.is_tensor(audio):
        audio = torch.from_numpy(audio)
    device = tokenizer.device
    audio = audio.to(device)
    if padding > 0:
        audio = F.pad(audio, (0, padding))
    stft = torch.stft(
        audio, tokenizer.n_fft, hop, window=tokenizer.window.to(device), return_complex=True
    )
    magnitudes = spectral.power(stft[..., :-1])
    mel_spec = tokenizer._mel_filters.to(device) @ magnitudes
    log_spec = torch.clamp(mel_spec, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def kaldi_fbank_real(kaldi: types.ModuleType, waveform: Any, num_mel_bins: int) -> Any:
    """``kaldi.fbank(waveform, num_mel_bins=num_mel_bins)`` (other arguments at their
    defaults, :data:`KALDI_FBANK_DEFAULTS`) with the power spectrum from
    :func:`blackwell_compat.spectral.power`.

    Uses torchaudio's own framing, windowing and mel-bank helpers, so only the complex
    ``abs`` differs from the original.
    """
    import torch

    o = KALDI_FBANK_DEFAULTS
    device, dtype = waveform.device, waveform.dtype
    waveform, window_shift, window_size, padded_window_size = (
        kaldi._get_waveform_and_window_properties(
            waveform,
            o["channel"],
            o["sample_frequency"],
            o["frame_shift"],
            o["frame_length"],
            o["round_to_power_of_two"],
            o["preemphasis_coefficient"],
        )
    )
    if len(waveform) < o["min_duration"] * o["sample_frequency"]:
        return torch.empty(0, device=device, dtype=dtype)
    strided_input, _log_energy = kaldi._get_window(
        waveform,
        padded_window_size,
        window_size,
        window_shift,
        o["window_type"],
        o["blackman_coeff"],
        o["snip_edges"],
        o["raw_energy"],
        o["energy_floor"],
        o["dither"],
        o["remove_dc_offset"],
        o["preemphasis_coefficient"],
    )
    spectrum = spectral.power(torch.fft.rfft(strided_input))  # use_power=True
    mel_energies, _ = kaldi.get_mel_banks(
        num_mel_bins,
        padded_window_size,
        o["sample_frequency"],
        o["low_freq"],
        o["high_freq"],
        o["vtln_low"],
        o["vtln_high"],
        o["vtln_warp"],
    )
    mel_energies = mel_energies.to(device=device, dtype=dtype)
    mel_energies = torch.nn.functional.pad(mel_energies, (0, 1), mode="constant", value=0)
    mel_energies = torch.mm(spectrum, mel_energies.T)
    # use_log_fbank=True, use_energy=False, subtract_mean=False
    return torch.max(mel_energies, kaldi._get_epsilon(device, dtype)).log()


# -- drift checks that a declaration cannot say ---------------------------------------------

#: torchaudio's kaldi helpers :func:`kaldi_fbank_real` calls, with their parameters.
KALDI_HELPERS: dict[str, tuple[str, ...]] = {
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
}


def kaldi_problems(kaldi: types.ModuleType) -> list[str]:
    """Drift of torchaudio's kaldi module as :func:`kaldi_fbank_real` uses it.  A function
    another patch (``torchaudio``) has replaced in place is skipped: its signature is then the
    router's, and that patch checked it."""
    where = kaldi.__name__
    problems: list[str] = []
    for name, params in KALDI_HELPERS.items():
        if not is_swapped(getattr(kaldi, name, None)):
            problems += function_problems(kaldi, name, where=where, params=params)
    fbank = getattr(kaldi, "fbank", None)
    if fbank is None:
        problems.append(f"{where}.fbank is missing")
    elif not is_swapped(fbank):
        problems += function_problems(
            kaldi, "fbank", where=where, names=["rfft", "abs", "_get_window", "get_mel_banks"]
        )
        try:
            signature: dict[str, inspect.Parameter] = dict(inspect.signature(fbank).parameters)
        except (TypeError, ValueError):
            signature = {}
        for key, expected in KALDI_FBANK_DEFAULTS.items():
            param = signature.get(key)
            if param is None:
                problems.append(f"{where}.fbank has no parameter {key}")
            elif param.default != expected:
                problems.append(
                    f"{where}.fbank default {key}={param.default!r}, expected {expected!r}"
                )
    return problems


def _xvector_kaldi_problems(module: types.ModuleType) -> list[str]:
    kaldi = getattr(module, "Kaldi", None)
    if not isinstance(kaldi, types.ModuleType) or kaldi.__name__ != KALDI_MODULE:
        return [f"{module.__name__}.Kaldi is not {KALDI_MODULE}"]
    return kaldi_problems(kaldi)


# -- rewrites built from their module ----------------------------------------------------------


def _s3_log_mel(module: types.ModuleType, original: Any) -> Any:
    def log_mel_spectrogram(self: Any, audio: Any, padding: int = 0) -> Any:
        return log_mel_spectrogram_real(self, audio, padding, hop=module.S3_HOP)

    return log_mel_spectrogram


def _tokenizer_device(self: Any, audio: Any, padding: int = 0) -> Any:
    return self.device


def _extract_feature(module: types.ModuleType, original: Any) -> Any:
    def extract_feature(audio: Any) -> Any:
        kaldi = module.Kaldi
        features, feature_times, feature_lengths = [], [], []
        for au in audio:
            feature = kaldi_fbank_real(kaldi, au.unsqueeze(0), num_mel_bins=80)
            feature = feature - feature.mean(dim=0, keepdim=True)
            features.append(feature)
            feature_times.append(au.shape[0])
            feature_lengths.append(feature.shape[0])
        return module.pad_list(features, pad_value=0), feature_lengths, feature_times

    return extract_feature


def _cx_to_magphase(module: types.ModuleType, original: Any) -> Any:
    def cx_to_magphase(hp: Any, spec: Any) -> Any:
        import torch

        mag, phase = spectral.magnitude(spec), spectral.phase(spec)
        mag = 20 * torch.log10(mag.clip(hp.stft_magnitude_min))
        return module.normalize(hp, mag), phase

    return cx_to_magphase


def _magphase_to_cx(module: types.ModuleType, original: Any) -> Any:
    def magphase_to_cx(hp: Any, magspec: Any, phases: Any) -> Any:
        magspec = module.denormalize_spectrogram(hp, magspec)
        magspec = 10.0 ** ((magspec / 20).clip(max=10))
        return spectral.polar(magspec, phases)

    return magphase_to_cx


# -- the patch -------------------------------------------------------------------------------


class ChatterboxPatch(DeclaredPatch):
    name = "chatterbox"
    summary = (
        "Chatterbox S3Tokenizer log-mel, CAMPPlus fbank features and perth watermarker "
        "without complex abs/angle/exp"
    )
    distribution = "chatterbox-tts"
    supported = ">=0.1.4,<0.2"
    requires_affected = True
    strategies = ()
    docs = "docs/patches/chatterbox.md"
    declarations = (
        Expect(S3TOKENIZER_MODULE, "S3_HOP", instance_of=int),
        Rewrite(
            Expect(
                S3TOKENIZER_MODULE,
                "S3Tokenizer.log_mel_spectrogram",
                params=("self", "audio", "padding"),
                # (the buffer names "window" and "_mel_filters" are string constants there)
                names=(
                    "stft",
                    "abs",
                    "n_fft",
                    "S3_HOP",
                    "window",
                    "_mel_filters",
                    "log10",
                    "maximum",
                ),
            ),
            build=_s3_log_mel,
            on=_tokenizer_device,
            note="S3Tokenizer.log_mel_spectrogram: real-valued power spectrum on affected devices",
        ),
        Expect(S3TOKENIZER_MODULE, "S3Tokenizer.__init__", names=("n_fft", "register_buffer")),
        Rewrite(
            Expect(
                XVECTOR_MODULE,
                "extract_feature",
                params=("audio",),
                names=("fbank", "unsqueeze", "mean", "pad_list"),
            ),
            build=_extract_feature,
            note=(
                "xvector.extract_feature: kaldi fbank with a real-valued spectrum on affected "
                "devices"
            ),
        ),
        Expect(XVECTOR_MODULE, "pad_list", params=("xs", "pad_value")),
        Expect(XVECTOR_MODULE, check=_xvector_kaldi_problems),
        Expect(PERTH_MODULE, distribution=PERTH_DISTRIBUTION, supported=PERTH_SUPPORTED),
        Rewrite(
            Expect(
                PERTH_MODULE,
                "cx_to_magphase",
                params=("hp", "spec"),
                names=("angle", "abs", "log10", "clip", "stft_magnitude_min", "normalize"),
            ),
            build=_cx_to_magphase,
            on="spec",
        ),
        Rewrite(
            Expect(
                PERTH_MODULE,
                "magphase_to_cx",
                params=("hp", "magspec", "phases"),
                names=("denormalize_spectrogram", "exp", "clip"),
            ),
            build=_magphase_to_cx,
            on="phases",
            note="perth cx_to_magphase/magphase_to_cx: real-valued on affected devices",
        ),
        Expect(PERTH_MODULE, "normalize"),
        Expect(PERTH_MODULE, "denormalize_spectrogram"),
    )


def perth_problems(module: types.ModuleType) -> list[str]:
    """Drift of the perth watermarker's utilities (and the resemble-perth version)."""
    return ChatterboxPatch().check(module)
