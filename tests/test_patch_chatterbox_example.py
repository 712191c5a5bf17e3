"""``examples/chatterbox_voice_clone.py --random-weights``: Chatterbox's voice-cloning front end
(S3Gen.embed_ref: S3Tokenizer tokens, CAMPPlus embedding) and the perth watermarker run offline
under emulation with the patch, and fail with the NVRTC error when it is disabled."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

pytestmark = [pytest.mark.targets, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chatterbox_voice_clone.py"


def _run(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BLACKWELL_COMPAT_")}
    environ.update(env)
    command = [sys.executable, str(EXAMPLE), "--random-weights", "--emulate", "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=environ)


def test_example_clones_and_watermarks_under_emulation(tmp_path: Path) -> None:
    out = tmp_path / "c.wav"
    result = _run(out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "embedding: (1, 192)" in result.stderr
    with wave.open(str(out), "rb") as wav:
        assert wav.getframerate() == 24000 and wav.getnframes() == 3 * 24000


def test_example_fails_without_the_patch(tmp_path: Path) -> None:
    result = _run(tmp_path / "c.wav", BLACKWELL_COMPAT_DISABLE="chatterbox")
    assert result.returncode != 0
    assert "invalid value for --gpu-architecture" in result.stderr
