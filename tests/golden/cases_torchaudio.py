"""Parity cases for the ``torchaudio`` patch: kaldi features, transforms, phase reconstruction.

Each case is a :class:`Case` whose ``run()`` computes one output with torchaudio's public API
from a deterministic input.  The same ``run()`` gives the reference (CPU, unpatched), the
failure (inside ``bc.emulate()`` without patches) and the patched result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from golden.signals import speechlike

ONE_SECOND = 16000


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[[], Any]
    # Whether the unpatched computation hits a Jiterator kernel (fails under emulation).
    jitted: bool = True
    # Tolerances of the ``real`` strategy against the reference: None = assert_close defaults.
    tolerance: dict[str, float] | None = None
    tags: tuple[str, ...] = field(default=())

    def run(self) -> Any:
        return self.fn()


def _wave(seconds: float = 1.0, channels: int = 1, seed: int = 0) -> Any:
    return speechlike(int(ONE_SECOND * seconds), seed=seed, channels=channels)


def _kaldi(
    name: str, *, scale: float = 1.0, dtype: str | None = None, **options: Any
) -> Callable[[], Any]:
    def run() -> Any:
        import torch
        import torchaudio.compliance.kaldi as kaldi

        wave = _wave() * scale
        if dtype is not None:
            wave = wave.to(getattr(torch, dtype))
        return getattr(kaldi, name)(wave, **options)

    return run


def _transform(build: Callable[[Any], Any], make_input: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        import torch
        import torchaudio.transforms as T

        module = build(T)
        with torch.no_grad():
            return module(make_input())

    return run


def _complex_spec(n_fft: int = 256, hop: int = 64) -> Callable[[], Any]:
    def make() -> Any:
        import torchaudio.transforms as T

        return T.Spectrogram(n_fft=n_fft, hop_length=hop, power=None)(_wave(0.5))

    return make


def _griffinlim(spectrum_by_transform: bool) -> Callable[[], Any]:
    def run() -> Any:
        import torch
        import torchaudio.transforms as T

        wave = _wave(0.5)
        if spectrum_by_transform:
            spec = T.Spectrogram(n_fft=256, hop_length=64, power=2.0)(wave)
        else:
            # The same power spectrogram without any complex op, so that the case isolates
            # Griffin-Lim itself.
            window = torch.hann_window(256)
            stft = torch.stft(wave, 256, 64, window=window, return_complex=True)
            spec = torch.view_as_real(stft).pow(2).sum(-1)
        gl = T.GriffinLim(n_fft=256, hop_length=64, n_iter=8, power=2.0, rand_init=False)
        with torch.no_grad():
            return gl(spec)

    return run


def _spectral_centroid() -> Any:
    import torch
    import torchaudio.functional as F

    window = torch.hann_window(400)
    return F.spectral_centroid(_wave(), 16000, 0, window, 400, 160, 400)


def _phase_vocoder_f64() -> Any:
    import torch
    import torchaudio.functional as F

    spec = _complex_spec()().to(torch.complex128)
    advance = torch.linspace(0, math.pi * 64, spec.shape[-2], dtype=torch.float64)[..., None]
    return F.phase_vocoder(spec, 1.3, advance)


# The phase vocoder accumulates phases with a cumulative sum over frames, so a one-ulp change
# of one wrapped phase difference moves every later output by up to ulp(accumulated phase) x
# magnitude.  The float32 reference itself is that far from the float64 result; the bound used
# for it in the tests is the reference's own float32 error (see test_patch_torchaudio.py).
TIME_STRETCH_F32 = "time_stretch_f32"

CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("kaldi_fbank_default", _kaldi("fbank")),
        Case(
            "kaldi_fbank_wespeaker",
            _kaldi("fbank", scale=32768.0, num_mel_bins=80, window_type="hamming", dither=0.0),
        ),
        Case(
            "kaldi_fbank_options",
            _kaldi(
                "fbank",
                num_mel_bins=40,
                use_energy=True,
                htk_compat=True,
                use_power=False,
                raw_energy=False,
                snip_edges=False,
                subtract_mean=True,
                window_type="blackman",
                low_freq=60.0,
                high_freq=-400.0,
            ),
        ),
        Case("kaldi_fbank_linear", _kaldi("fbank", use_log_fbank=False, use_energy=True)),
        Case("kaldi_fbank_vtln", _kaldi("fbank", vtln_warp=1.1, window_type="hanning")),
        Case("kaldi_fbank_float64", _kaldi("fbank", dtype="float64", num_mel_bins=64)),
        Case("kaldi_spectrogram_default", _kaldi("spectrogram")),
        Case(
            "kaldi_spectrogram_options",
            _kaldi(
                "spectrogram",
                window_type="rectangular",
                subtract_mean=True,
                raw_energy=False,
                frame_length=20.0,
                round_to_power_of_two=False,
            ),
        ),
        Case("kaldi_mfcc_default", _kaldi("mfcc")),
        Case("kaldi_mfcc_energy", _kaldi("mfcc", use_energy=True, htk_compat=True, num_ceps=20)),
        Case("spectrogram_power2", _transform(lambda T: T.Spectrogram(n_fft=400), _wave)),
        Case(
            "spectrogram_power1_normalized",
            _transform(lambda T: T.Spectrogram(n_fft=512, power=1.0, normalized=True), _wave),
        ),
        Case("spectrogram_power_0_5", _transform(lambda T: T.Spectrogram(power=0.5), _wave)),
        # power=None returns the complex spectrum: no Jiterator kernel is involved.
        Case(
            "spectrogram_complex",
            _transform(lambda T: T.Spectrogram(power=None), _wave),
            jitted=False,
        ),
        Case(
            "melspectrogram_batched",
            _transform(
                lambda T: T.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=64),
                lambda: _wave(channels=2).reshape(2, 1, -1),
            ),
        ),
        Case(
            "mfcc_transform",
            _transform(
                lambda T: T.MFCC(16000, n_mfcc=20, melkwargs={"n_fft": 400, "n_mels": 64}), _wave
            ),
        ),
        Case("spectral_centroid", _spectral_centroid),
        Case("griffinlim", _griffinlim(False)),
        # Spectrogram -> GriffinLim: the patched power spectrum is within 2 ulps of abs() ** 2,
        # and 8 phase-retrieval iterations amplify that: measured 1.4e-5 on a waveform of
        # peak 1.05 (CPU).  Bound: 1e-4 absolute.
        Case(
            "griffinlim_from_spectrogram",
            _griffinlim(True),
            tolerance={"rtol": 0.0, "atol": 1e-4},
        ),
        Case(
            TIME_STRETCH_F32,
            _transform(
                lambda T: T.TimeStretch(hop_length=64, n_freq=129, fixed_rate=1.25), _complex_spec()
            ),
            tags=("phase_accumulation",),
        ),
        Case("phase_vocoder_float64", _phase_vocoder_f64),
    )
}
