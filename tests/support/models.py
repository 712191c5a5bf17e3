"""Offline, random-weight builders for the Kokoro and Chatterbox models the parity tests use.

Nothing here downloads: Kokoro's ``KModel`` gets its config as a dict and an empty state dict
as a file object, so it keeps its random initialisation; Chatterbox's ``S3Tokenizer`` and
``CAMPPlus`` are built from their constructors.  Every builder seeds torch first, so the same
torch build gives the same weights (the goldens under ``tests/golden/`` rely on it).

The target libraries are imported inside the functions: importing this module is free.
"""

from __future__ import annotations

import io
from typing import Any

# Kokoro -------------------------------------------------------------------------------------

# A stand-in phoneme vocabulary (the published one ships in the model's config.json, which
# cannot be downloaded here).  Ids stay below n_token.
KOKORO_PHONEMES = (
    '$;:,.!?—…"()“” AIOQSTWYᵊabcdefhijklmnopqrstuvwxyz'
    "ɑɐɒæβɔɕçɖðʤəɚɛɜɟɡɥɨɪʝɯɰŋɳɲɴøɸθœɹɾɻʁɽʂʃʈʧʊʋʌɣɤχʎʒʔˈˌːʰʲ↓→↗↘ᵻ"
)
KOKORO_VOCAB = {ch: i + 1 for i, ch in enumerate(dict.fromkeys(KOKORO_PHONEMES))}

# The published Kokoro-82M sizes, with a smaller ALBERT (the decoder hard-codes 512 channels,
# so hidden_dim stays 512; the vocoder, which the patch changes, is the real one).
KOKORO_CONFIG: dict[str, Any] = {
    "vocab": KOKORO_VOCAB,
    "n_token": 178,
    "hidden_dim": 512,
    "style_dim": 128,
    "n_layer": 3,
    "max_dur": 50,
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

# Short and long phoneme inputs (random weights: about 0.6 s of audio per phoneme).
KOKORO_SHORT = "hˈi"
KOKORO_LONG = "ðə kwˈɪk bɹˈWn fˈɑks"


def kokoro_config(**overrides: Any) -> dict[str, Any]:
    config = {**KOKORO_CONFIG, **overrides}
    config["plbert"] = dict(config["plbert"])
    config["istftnet"] = dict(config["istftnet"])
    return config


def build_kmodel(seed: int = 0, disable_complex: bool = False, **config: Any) -> Any:
    """A random-weight ``kokoro.KModel`` in eval mode, on the CPU, built without downloads."""
    import torch
    from kokoro.model import KModel

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(seed)
    model = KModel(
        repo_id="hexgrad/Kokoro-82M",
        config=kokoro_config(**config),
        model=empty,  # type: ignore[arg-type]
        disable_complex=disable_complex,
    )
    return model.eval()


def kokoro_voice(seed: int = 1) -> Any:
    """A random reference style vector (``ref_s``) of the shape KModel takes: (1, 256)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 256, generator=generator)


def run_kmodel(model: Any, phonemes: str = KOKORO_SHORT, seed: int = 0) -> Any:
    """One forward with the noise sources (SineGen, noise branch) seeded: deterministic audio."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        return model(phonemes, kokoro_voice())


# Chatterbox ---------------------------------------------------------------------------------


def build_s3tokenizer(seed: int = 0) -> Any:
    """Chatterbox's ``S3Tokenizer`` (speech_tokenizer_v2_25hz) with random weights."""
    import torch
    from chatterbox.models.s3tokenizer import S3Tokenizer

    torch.manual_seed(seed)
    return S3Tokenizer("speech_tokenizer_v2_25hz").eval()


def build_campplus(seed: int = 0) -> Any:
    """Chatterbox's CAMPPlus speaker encoder with random weights."""
    import torch
    from chatterbox.models.s3gen.xvector import CAMPPlus

    torch.manual_seed(seed)
    return CAMPPlus(memory_efficient=False).eval()


def build_perth_watermarker(device: str = "cpu") -> Any:
    """The resemble-perth implicit watermarker with the weights its wheel ships (offline)."""
    import perth

    return perth.PerthImplicitWatermarker(device=device)
