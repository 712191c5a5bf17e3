"""Speech features with torchaudio on a GPU whose architecture the installed NVRTC does not know.

    python examples/torchaudio_features.py speech.wav               # your audio, GPU if any
    python examples/torchaudio_features.py --random-weights         # offline, no files needed
    python examples/torchaudio_features.py --random-weights --emulate  # failure + fix on CPU

Computes what speech pipelines compute from audio: Kaldi-compatible ``fbank`` (as WeSpeaker /
pyannote / WhisperX diarization do, under ``torch.vmap``), ``MelSpectrogram`` and ``MFCC``, and
a 256-dimensional speaker embedding with pyannote.audio's WeSpeaker ResNet34 when pyannote is
installed.  ``--embedding-checkpoint`` loads published weights (a local pyannote checkpoint
file, e.g. the ``pytorch_model.bin`` of pyannote/wespeaker-voxceleb-resnet34-LM); with
``--random-weights`` the model keeps a seeded random initialisation, so the script runs with
no download.

One line makes it work on DGX Spark (sm_121) or an RTX 50xx with an older NVRTC:
``blackwell_compat.apply()``.  With ``--emulate`` the script first shows the failure on the CPU
(inside ``bc.emulate()``), then the same computation with the patch, and compares both with the
unpatched CPU result.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from typing import Any

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")


def load_audio(path: str, sample_rate: int) -> Any:
    import torchaudio

    wave, rate = torchaudio.load(path)
    if rate != sample_rate:
        wave = torchaudio.functional.resample(wave, rate, sample_rate)
    return wave[:1]


def synthetic_audio(seconds: float, sample_rate: int) -> Any:
    import torch

    t = torch.arange(int(seconds * sample_rate), dtype=torch.float64) / sample_rate
    voice = sum(0.3 / h * torch.sin(2 * math.pi * 150 * h * t) for h in range(1, 6))
    return (voice * (0.6 + 0.4 * torch.sin(2 * math.pi * 2 * t) ** 2)).float().unsqueeze(0)


def embedding_model(checkpoint: str | None, random_weights: bool) -> Any:
    try:
        from pyannote.audio.models.embedding.wespeaker import WeSpeakerResNet34
    except ImportError:
        return None
    import torch

    if checkpoint:
        from pyannote.audio import Model

        return Model.from_pretrained(checkpoint).eval()
    if not random_weights:
        return None
    torch.manual_seed(0)
    return WeSpeakerResNet34().eval()


def features(wave: Any, device: Any, model: Any) -> dict[str, Any]:
    import torch
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.transforms as T

    wave = wave.to(device)
    fbank = functools.partial(kaldi.fbank, num_mel_bins=80, window_type="hamming", dither=0.0)
    out = {
        "kaldi fbank (vmap)": torch.vmap(fbank)(wave.unsqueeze(0) * 32768.0)[0],
        "MelSpectrogram": T.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=80).to(device)(
            wave
        ),
        "MFCC": T.MFCC(16000, n_mfcc=20, melkwargs={"n_fft": 400, "n_mels": 64}).to(device)(wave),
    }
    if model is not None:
        with torch.inference_mode():
            out["WeSpeaker embedding"] = model.to(device)(wave.unsqueeze(0))
    return {k: v.detach().cpu() for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="?", help="a speech file (16 kHz or resampled)")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="offline: synthetic audio and a seeded random embedding model",
    )
    parser.add_argument("--embedding-checkpoint", help="pyannote WeSpeaker checkpoint file")
    parser.add_argument(
        "--emulate",
        action="store_true",
        help="on the CPU: show the affected-GPU failure, then the patched result",
    )
    parser.add_argument("--strategy", choices=("real", "cpu"), default="real")
    args = parser.parse_args(argv)
    if not args.audio and not args.random_weights:
        parser.error("give an audio file, or --random-weights for the offline demo")

    import torch

    import blackwell_compat as bc

    wave = load_audio(args.audio, 16000) if args.audio else synthetic_audio(3.0, 16000)
    model = embedding_model(args.embedding_checkpoint, args.random_weights)
    strategies = {"torchaudio": args.strategy}

    if not args.emulate:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        report = bc.apply(strategies=strategies)  # patches only what this machine needs
        print(report)
        for name, value in features(wave, device, model).items():
            print(f"{name:<22} shape {tuple(value.shape)}  mean {float(value.mean()):+.5f}")
        return 0

    cpu = torch.device("cpu")
    reference = features(wave, cpu, model)
    with bc.emulate("sm_121"):
        try:
            features(wave, cpu, model)
        except RuntimeError as exc:
            line = next((x for x in str(exc).splitlines() if "gpu-architecture" in x), str(exc))
            print(f"without the patch (emulated sm_121): RuntimeError: {line.strip()}")
        else:
            print("without the patch: no failure (unexpected)")
            return 1
        with bc.patched(only="torchaudio", strategies=strategies):
            patched = features(wave, cpu, model)
    worst = 0.0
    for name, value in patched.items():
        ref = reference[name]
        diff = float((value.double() - ref.double()).abs().max())
        scale = float(ref.abs().max()) or 1.0
        worst = max(worst, diff / scale)
        print(f"with the patch: {name:<22} max |patched - reference| = {diff:.3g}")
    print(f"largest difference relative to each output's range: {worst:.3g}")
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
