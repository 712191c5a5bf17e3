"""``examples/kokoro_tts.py --random-weights``: runs offline under emulation with the patch,
and fails with the NVRTC error when the patch is disabled (so the example shows the fix)."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

pytestmark = [pytest.mark.targets, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "kokoro_tts.py"


def _run(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BLACKWELL_COMPAT_")}
    environ.update(env)
    command = [sys.executable, str(EXAMPLE), "--random-weights", "--emulate", "--phonemes", "hˈi"]
    return subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, timeout=900, env=environ
    )


def test_example_speaks_under_emulation(tmp_path: Path) -> None:
    out = tmp_path / "k.wav"
    result = _run(out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote" in result.stdout
    with wave.open(str(out), "rb") as wav:
        assert wav.getframerate() == 24000 and wav.getnchannels() == 1
        assert wav.getnframes() > 0


def test_example_fails_without_the_patch(tmp_path: Path) -> None:
    result = _run(tmp_path / "k.wav", BLACKWELL_COMPAT_DISABLE="kokoro")
    assert result.returncode != 0
    assert "invalid value for --gpu-architecture" in result.stderr
