"""Clone a voice with XTTS v2 on a Blackwell-era PyTorch, safely.

    python examples/xtts_clone.py --model-dir ~/xtts_v2 --reference me.wav \\
        --text "Hello from a new GPU." --out hello.wav

``--model-dir`` is the folder of the published XTTS v2 release (``config.json``, ``model.pth``,
``vocab.json``).  The script calls ``blackwell_compat.apply()`` first; with it:

* Coqui ``TTS`` 0.22 loads ``model.pth`` on torch >= 2.6 with exactly the four XTTS config
  classes allow-listed for that one load (no ``weights_only=False``);
* ``coqui-tts`` 0.28 loads a legacy ``model.pth`` without rewriting it on disk;
* on a GPU whose architecture the installed NVRTC does not know, the conditioning path
  (torchaudio ``MelSpectrogram``) runs without run-time compiled kernels.

Offline mode (no download, used by the tests)::

    python examples/xtts_clone.py --random-weights /tmp/xtts-random --out /tmp/noise.wav

builds the full XTTS v2 model (467 M parameters) from the published configuration with random
weights and a stand-in 6681-id BPE vocabulary, writes a checkpoint folder in the release layout
(``config.json``, ``vocab.json``, ``model.pth`` holding ``{"config": XttsConfig, "model":
state_dict}``), loads it back through the library's own loader and speaks random audio.  It
proves the plumbing, not the voice.

The helpers below (``published_config``, ``write_checkpoint_dir``, ...) are importable; the
project's tests use them.  The reference audio is read with ``soundfile`` (a dependency of
both ``TTS`` and ``coqui-tts``): torchaudio >= 2.9 reads audio through torchcodec, which needs
FFmpeg's shared libraries.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import wave
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: ``model_args`` of the published XTTS v2 ``config.json``.
PUBLISHED_MODEL_ARGS: dict[str, Any] = {
    "gpt_layers": 30,
    "gpt_n_model_channels": 1024,
    "gpt_n_heads": 16,
    "gpt_number_text_tokens": 6681,
    "gpt_start_text_token": 261,
    "gpt_stop_text_token": 0,
    "gpt_num_audio_tokens": 1026,
    "gpt_start_audio_token": 1024,
    "gpt_stop_audio_token": 1025,
    "gpt_max_audio_tokens": 605,
    "gpt_max_text_tokens": 402,
    "gpt_max_prompt_tokens": 70,
    "gpt_code_stride_len": 1024,
    "gpt_use_masking_gt_prompt_approach": True,
    "gpt_use_perceiver_resampler": True,
    "input_sample_rate": 22050,
    "output_sample_rate": 24000,
    "output_hop_length": 256,
    "decoder_input_dim": 1024,
    "d_vector_dim": 512,
    "cond_d_vector_in_each_upsampling_layer": True,
    "duration_const": 102400,
    "kv_cache": True,
    "num_chars": 255,
}
#: Top-level values of the published configuration that differ from ``XttsConfig()``.
PUBLISHED_TOP_LEVEL: dict[str, Any] = {
    "gpt_cond_len": 30,
    "gpt_cond_chunk_len": 4,
    "max_ref_len": 30,
}
PUBLISHED_AUDIO: dict[str, Any] = {"sample_rate": 22050, "output_sample_rate": 24000}

VOCAB_SIZE = 6681
LANGUAGES = (
    "en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn", "hu", "ko",
    "ja", "hi",
)  # fmt: skip
#: Where the published checkpoint pickles these two classes (``coqui-tts`` moved them since).
LEGACY_MODULE = "TTS.tts.models.xtts"


# -- building an offline stand-in of the release --------------------------------------------


def published_config() -> Any:
    """An ``XttsConfig`` with the published XTTS v2 values (builds the full model)."""
    from TTS.tts.configs.xtts_config import XttsConfig

    config = XttsConfig()
    for name, value in PUBLISHED_MODEL_ARGS.items():
        setattr(config.model_args, name, value)
    for name, value in PUBLISHED_AUDIO.items():
        setattr(config.audio, name, value)
    for name, value in PUBLISHED_TOP_LEVEL.items():
        setattr(config, name, value)
    config.languages = list(LANGUAGES)
    return config


def write_stand_in_vocab(path: str | os.PathLike[str], size: int = VOCAB_SIZE) -> Path:
    """Write a byte-pair-encoding vocabulary with exactly *size* ids (``tokenizers`` format).

    Ids follow the published vocabulary where the model relies on them: ``[STOP]`` 0,
    ``[UNK]`` 1, ``[SPACE]`` 2, ``[START]`` 261, and one special token per language.  The
    other ids are characters and merges built from them, so the file is a working BPE model.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import Whitespace

    specials = ["[STOP]", "[UNK]", "[SPACE]"]
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789'.,!?-:;\"()")
    vocab: dict[str, int] = {}
    for token in specials + alphabet:
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    singles = list(alphabet[:26])
    fixed = {261: "[START]"}
    language_tokens = [f"[{lang}]" for lang in LANGUAGES]
    words = list(singles)
    position = 0
    while len(vocab) + len(language_tokens) < size:
        if len(vocab) in fixed:
            vocab[fixed[len(vocab)]] = len(vocab)
            continue
        left = words[position // len(singles)]
        right = singles[position % len(singles)]
        position += 1
        token = left + right
        if token in vocab:
            continue
        vocab[token] = len(vocab)
        merges.append((left, right))
        words.append(token)
    for token in language_tokens:
        vocab[token] = len(vocab)
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.add_special_tokens(["[STOP]", "[UNK]", "[SPACE]", "[START]", *language_tokens])
    target = Path(path)
    tokenizer.save(str(target))
    ids = json.loads(target.read_text())["model"]["vocab"].values()
    if max(ids) + 1 != size:  # pragma: no cover - a bug in this function
        raise RuntimeError(f"stand-in vocabulary has {max(ids) + 1} ids, expected {size}")
    return target


def build_random_model(config: Any, seed: int = 0) -> Any:
    """The full XTTS v2 model for *config*, randomly initialised (deterministic per *seed*)."""
    import torch
    from TTS.tts.models.xtts import Xtts

    torch.manual_seed(seed)
    model = Xtts(config)
    model.eval()  # Xtts.eval() returns None
    return model


@contextmanager
def legacy_class_paths() -> Any:
    """Pickle ``XttsArgs`` / ``XttsAudioConfig`` under ``TTS.tts.models.xtts``, as the published
    checkpoint does, also on ``coqui-tts`` (which moved them to ``TTS.tts.configs.xtts_config``
    and re-exports them from the old module)."""
    import importlib

    legacy = importlib.import_module(LEGACY_MODULE)
    classes = [legacy.XttsArgs, legacy.XttsAudioConfig]
    before = [cls.__module__ for cls in classes]
    try:
        for cls in classes:
            cls.__module__ = LEGACY_MODULE
        yield
    finally:
        for cls, module in zip(classes, before, strict=True):
            cls.__module__ = module


def save_checkpoint(
    model: Any, config: Any, path: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``{"config": config, "model": state_dict, **extra}`` the way the release does."""
    import torch

    target = Path(path)
    payload = {"config": config, "model": model.state_dict()}
    payload.update(extra or {})
    with legacy_class_paths():
        torch.save(payload, target)
    return target


def write_checkpoint_dir(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build the random-weight model and write ``config.json``, ``vocab.json``, ``model.pth``."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    config = published_config()
    write_stand_in_vocab(target / "vocab.json")
    model = build_random_model(config, seed)
    save_checkpoint(model, config, target / "model.pth")
    config.save_json(str(target / "config.json"))
    return target


# -- using a checkpoint folder --------------------------------------------------------------


def load_model(folder: str | os.PathLike[str], device: str = "cpu") -> Any:
    """Load a checkpoint folder through the library's own loader (``Xtts.load_checkpoint``)."""
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    config = XttsConfig()
    config.load_json(str(Path(folder) / "config.json"))
    model = Xtts(config)
    model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True)
    return model.to(device)


def reference_waveform(seconds: float = 4.0, sample_rate: int = 22050, seed: int = 0) -> Any:
    """A voice-like stand-in reference, ``(1, samples)`` float32 in [-1, 1]: a gliding
    harmonic tone under a syllable-rate envelope, plus a little noise."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate), dtype=torch.float64) / sample_rate
    pitch = 120.0 + 30.0 * torch.sin(2 * math.pi * 0.5 * t)
    phase = 2 * math.pi * torch.cumsum(pitch, 0) / sample_rate
    voice = sum(torch.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 4.0 * t).clamp(min=0)
    noise = 0.02 * torch.randn(t.shape, generator=generator, dtype=torch.float64)
    wave_ = envelope * voice + noise
    wave_ = 0.9 * wave_ / wave_.abs().max()
    return wave_.to(torch.float32).unsqueeze(0)


def read_reference(path: str | os.PathLike[str], sample_rate: int) -> Any:
    """Read a reference file as ``load_audio`` does (mono, resampled, clipped), via soundfile."""
    import soundfile
    import torch
    import torchaudio

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    audio = torch.from_numpy(data.T.copy()).mean(dim=0, keepdim=True)
    if rate != sample_rate:
        audio = torchaudio.functional.resample(audio, rate, sample_rate)
    return audio.clamp(-1, 1)


def conditioning_latents(model: Any, audio: Any, sample_rate: int = 22050) -> tuple[Any, Any]:
    """``Xtts.get_conditioning_latents`` for an audio tensor: the speaker embedding and the GPT
    conditioning latents, computed by the model's own methods with the arguments
    ``get_conditioning_latents`` passes them (the published configuration's lengths).

    ``get_conditioning_latents`` itself takes file paths and decodes them with
    ``torchaudio.load``; everything it computes after decoding is these two calls.
    """
    config = model.config
    audio = audio[:, : sample_rate * config.max_ref_len].to(model.device)
    speaker_embedding = model.get_speaker_embedding(audio, sample_rate)
    gpt_latents = model.get_gpt_cond_latents(
        audio, sample_rate, length=config.gpt_cond_len, chunk_length=config.gpt_cond_chunk_len
    )
    return gpt_latents, speaker_embedding


def write_wav(path: str | os.PathLike[str], audio: Any, sample_rate: int) -> Path:
    """16-bit PCM mono WAV with the standard library (no audio backend needed)."""
    import torch

    samples = torch.as_tensor(audio).detach().float().cpu().flatten().clamp(-1, 1)
    pcm = (samples * 32767).round().to(torch.int16).numpy().tobytes()
    target = Path(path)
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return target


def synthesize(
    model: Any,
    text: str,
    language: str,
    reference: Any,
    *,
    max_new_tokens: int | None = None,
    seed: int = 0,
) -> Any:
    """Conditioning latents from *reference*, then ``Xtts.inference``; returns the waveform."""
    import torch

    gpt_latents, speaker_embedding = conditioning_latents(model, reference)
    extra: dict[str, Any] = {}
    if max_new_tokens is not None:
        extra["max_new_tokens"] = max_new_tokens
    torch.manual_seed(seed)
    result = model.inference(text, language, gpt_latents, speaker_embedding, **extra)
    return torch.as_tensor(result["wav"])


# -- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="folder with config.json, model.pth and vocab.json")
    source.add_argument(
        "--random-weights",
        metavar="DIR",
        help="build the full model with random weights into DIR (offline) and use it",
    )
    parser.add_argument("--reference", help="reference voice (a WAV/FLAC file)")
    parser.add_argument("--text", default="Hello from a new GPU.")
    parser.add_argument("--language", default="en")
    parser.add_argument("--out", default="xtts_clone.wav", help="output WAV file")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda if present)")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="cap the generated audio tokens (default: the model's own limit; use a few "
        "dozen with --random-weights, which rarely emits the stop token)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-patch", action="store_true", help="do not call blackwell_compat.apply()"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.no_patch:
        import blackwell_compat as bc

        report = bc.apply()
        print(f"blackwell-compat applied: {', '.join(report.applied + report.pending) or 'none'}")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    folder = args.model_dir
    if args.random_weights:
        folder = args.random_weights
        if not (Path(folder) / "model.pth").exists():
            started = time.perf_counter()
            write_checkpoint_dir(folder, seed=args.seed)
            took = time.perf_counter() - started
            print(f"built a random-weight XTTS v2 in {folder} ({took:.1f} s)")
    started = time.perf_counter()
    try:
        model = load_model(folder, device)
    except Exception as exc:
        print(f"loading {folder} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"loaded {folder} on {device} ({time.perf_counter() - started:.1f} s)")
    rate = model.config.audio.sample_rate
    if args.reference:
        reference = read_reference(args.reference, rate)
    elif args.random_weights:
        reference = reference_waveform(4.0, rate, args.seed)
    else:
        print("--reference is required with --model-dir", file=sys.stderr)
        return 2
    started = time.perf_counter()
    audio = synthesize(
        model,
        args.text,
        args.language,
        reference,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    out_rate = model.config.audio.output_sample_rate
    write_wav(args.out, audio, out_rate)
    seconds = audio.numel() / out_rate
    print(
        f"wrote {args.out}: {seconds:.2f} s of audio at {out_rate} Hz "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
