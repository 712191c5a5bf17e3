"""Chatterbox voice cloning on a GPU whose architecture the installed NVRTC does not know.

With the published weights (downloaded by chatterbox from Hugging Face on first use)::

    python examples/chatterbox_voice_clone.py --reference my_voice.wav \\
        --text "This is my cloned voice on a DGX Spark." --out clone.wav

``--watermark-on-gpu`` moves Chatterbox's perth watermarker to the GPU as well (Chatterbox
builds it on the CPU, where nothing fails); the patch covers it there too.

Offline, with random weights (what the project's tests run)::

    python examples/chatterbox_voice_clone.py --random-weights --emulate --out marked.wav

builds the voice-cloning front end of Chatterbox's S3Gen with random weights (S3Tokenizer speech
tokens, CAMPPlus speaker embedding, prompt mel) from the reference (``--reference`` WAV, or a
synthetic voice), and watermarks the reference with the perth watermarker (its weights ship in
its wheel).  ``--emulate`` makes the CPU behave like an affected GPU, so the failure and the fix
show on any machine.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
import wave
from collections.abc import Iterator
from typing import Any

import blackwell_compat as bc


def read_wav(path: str) -> tuple[Any, int]:
    """Mono float32 samples and the rate of a 16-bit PCM WAV file."""
    import numpy as np

    with wave.open(path, "rb") as src:
        if src.getsampwidth() != 2:
            raise SystemExit(f"{path}: only 16-bit PCM WAV files are supported here")
        rate, channels = src.getframerate(), src.getnchannels()
        data = np.frombuffer(src.readframes(src.getnframes()), dtype=np.int16)
    samples = data.reshape(-1, channels).mean(axis=1) / 32768.0
    return samples.astype(np.float32), rate


def write_wav(path: str, audio: Any, sample_rate: int) -> None:
    import numpy as np

    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > 1.0:
        samples = samples / peak
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes()
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)


def synthetic_voice(seconds: float = 3.0, rate: int = 24000) -> Any:
    """A voice-like signal: a gliding harmonic tone with a syllable envelope."""
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    f0 = 130 + 30 * np.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * math.pi * 3 * t) ** 2
    return (0.25 * envelope * voice).astype(np.float32)


def clone_published(args: argparse.Namespace, device: str) -> tuple[Any, int]:
    import perth
    from chatterbox.tts import ChatterboxTTS

    if not args.reference:
        raise SystemExit("--reference my_voice.wav is needed with the published weights")
    model = ChatterboxTTS.from_pretrained(device=device)
    if args.watermark_on_gpu:
        model.watermarker = perth.PerthImplicitWatermarker(device=device)
    wav = model.generate(args.text, audio_prompt_path=args.reference)
    return wav.squeeze(0).cpu().numpy(), model.sr


def clone_random(args: argparse.Namespace, device: str) -> tuple[Any, int]:
    import torch
    from chatterbox.models.s3gen import S3Gen
    from perth import PerthImplicitWatermarker

    if args.reference:
        reference, rate = read_wav(args.reference)
    else:
        reference, rate = synthetic_voice(), 24000
    torch.manual_seed(0)
    s3gen = S3Gen().to(device).eval()
    with torch.no_grad():
        prompt = s3gen.embed_ref(torch.from_numpy(reference), rate, device=device)
    for key, value in prompt.items():
        if hasattr(value, "shape"):
            print(f"  {key}: {tuple(value.shape)}", file=sys.stderr)
    watermarker = PerthImplicitWatermarker(device=device if args.watermark_on_gpu else "cpu")
    return watermarker.apply_watermark(reference, sample_rate=rate), rate


@contextlib.contextmanager
def maybe_emulate(enabled: bool) -> Iterator[None]:
    if enabled:
        with bc.emulate():
            yield
    else:
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--text", default="Chatterbox speaks with your voice on this GPU.")
    parser.add_argument("--reference", help="16-bit PCM WAV of the voice to clone")
    parser.add_argument("--out", default="chatterbox.wav", help="output WAV file")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    parser.add_argument("--watermark-on-gpu", action="store_true", help="perth on the device")
    parser.add_argument("--random-weights", action="store_true", help="offline random model")
    parser.add_argument("--emulate", action="store_true", help="make the CPU an affected GPU")
    args = parser.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with maybe_emulate(args.emulate):
        print(bc.apply(only=["chatterbox"]), file=sys.stderr)
        start = time.perf_counter()
        clone = clone_random if args.random_weights else clone_published
        audio, rate = clone(args, device)
        elapsed = time.perf_counter() - start
    write_wav(args.out, audio, rate)
    print(f"wrote {args.out}: {len(audio) / rate:.2f} s of audio in {elapsed:.2f} s on {device}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
