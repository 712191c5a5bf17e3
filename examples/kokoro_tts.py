"""Kokoro text-to-speech on a GPU whose architecture the installed NVRTC does not know.

With the published weights (downloaded by kokoro from Hugging Face on first use)::

    python examples/kokoro_tts.py --text "Hello from a DGX Spark." --voice af_heart --out hello.wav

Offline, with random weights (what the project's tests run; the audio is noise-like, the point
is that the forward runs and matches the unpatched CPU result)::

    python examples/kokoro_tts.py --random-weights --emulate --out noise.wav

``--emulate`` makes the CPU behave like an affected GPU (the unpatched model then fails with
the NVRTC error), so you can see the failure and the fix on any machine.  ``--strategy``
chooses the patch strategy (``exact``, the default, or ``disable_complex``); ``--convert``
converts the built model with ``blackwell_compat.patches.kokoro.convert`` instead of using
``apply()``.  Writes a 24 kHz 16-bit WAV file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import wave
from collections.abc import Iterator
from typing import Any

import blackwell_compat as bc

REPO = "hexgrad/Kokoro-82M"
SAMPLE_RATE = 24000

# The published Kokoro-82M sizes with a small ALBERT, and a stand-in phoneme vocabulary (the
# real one ships in the model's config.json).  Random weights: no download at all.
_PHONEMES = "$;:,.!?—… AIOQSTWYabcdefhijklmnopqrstuvwxyzæçðŋɐɑɒɔəɛɜɡɪɹɾʃʊʌʒʔˈˌːθᵻ"
RANDOM_CONFIG: dict[str, Any] = {
    "vocab": {ch: i + 1 for i, ch in enumerate(dict.fromkeys(_PHONEMES))},
    "n_token": 178,
    "hidden_dim": 512,
    "style_dim": 128,
    "n_layer": 3,
    "max_dur": 10,
    "dropout": 0.2,
    "text_encoder_kernel_size": 5,
    "n_mels": 80,
    "plbert": {
        "hidden_size": 128,
        "num_attention_heads": 2,
        "intermediate_size": 256,
        "max_position_embeddings": 512,
        "num_hidden_layers": 2,
        "dropout": 0.1,
    },
    "istftnet": {
        "upsample_kernel_sizes": [20, 12],
        "upsample_rates": [10, 6],
        "gen_istft_hop_size": 5,
        "gen_istft_n_fft": 20,
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "resblock_kernel_sizes": [3, 7, 11],
        "upsample_initial_channel": 512,
    },
}


def write_wav(path: str, audio: Any, sample_rate: int = SAMPLE_RATE) -> None:
    """A mono 16-bit PCM WAV file from a float tensor in [-1, 1] (peak-normalised if louder)."""
    import torch

    samples = audio.detach().float().cpu().flatten()
    peak = float(samples.abs().max()) if samples.numel() else 0.0
    if peak > 1.0:
        samples = samples / peak
    pcm = (samples.clamp(-1, 1) * 32767).round().to(torch.int16).numpy().tobytes()
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)


def random_kmodel(seed: int = 0) -> Any:
    import torch
    from kokoro.model import KModel

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(seed)
    return KModel(repo_id=REPO, config=RANDOM_CONFIG, model=empty).eval()  # type: ignore[arg-type]


def speak_random(args: argparse.Namespace, device: str) -> Any:
    """Random-weight KModel, phonemes in, audio out (no G2P, no download)."""
    import torch

    model = random_kmodel().to(device)
    if args.convert:
        from blackwell_compat.patches.kokoro import convert

        convert(model, strategy=args.strategy)
    style = torch.randn(1, 256, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    with torch.no_grad():
        return model(args.phonemes, style)


def speak_published(args: argparse.Namespace, device: str) -> Any:
    """The published model and voice through KPipeline (downloads on first use)."""
    import torch
    from kokoro import KPipeline

    pipeline = KPipeline(lang_code=args.lang, repo_id=REPO, device=device)
    if args.convert:
        from blackwell_compat.patches.kokoro import convert

        convert(pipeline.model, strategy=args.strategy)
    chunks = [result.audio for result in pipeline(args.text, voice=args.voice)]
    if not chunks:
        raise SystemExit("kokoro produced no audio for that text")
    return torch.cat([c.flatten() for c in chunks])


@contextlib.contextmanager
def maybe_emulate(enabled: bool) -> Iterator[None]:
    if enabled:
        with bc.emulate():
            yield
    else:
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--text", default="Kokoro runs on this GPU now.")
    parser.add_argument("--voice", default="af_heart", help="a published voice name")
    parser.add_argument("--lang", default="a", help="KPipeline lang_code ('a': US English)")
    parser.add_argument("--out", default="kokoro.wav", help="output WAV file")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    parser.add_argument("--strategy", choices=("exact", "disable_complex"), default="exact")
    parser.add_argument("--convert", action="store_true", help="convert() instead of apply()")
    parser.add_argument("--random-weights", action="store_true", help="offline random model")
    parser.add_argument("--phonemes", default="ðə kwˈɪk bɹˈWn fˈɑks", help="random-weights input")
    parser.add_argument("--emulate", action="store_true", help="make the CPU an affected GPU")
    args = parser.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with maybe_emulate(args.emulate):
        if not args.convert:
            report = bc.apply(only=["kokoro"], strategies={"kokoro": args.strategy})
            print(report, file=sys.stderr)
        start = time.perf_counter()
        audio = speak_random(args, device) if args.random_weights else speak_published(args, device)
        elapsed = time.perf_counter() - start
    write_wav(args.out, audio)
    seconds = audio.numel() / SAMPLE_RATE
    print(f"wrote {args.out}: {seconds:.2f} s of audio in {elapsed:.2f} s on {device}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
