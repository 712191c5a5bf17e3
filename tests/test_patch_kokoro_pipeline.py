"""The ``kokoro`` patch applied lazily, before kokoro is imported, and reached through
``KPipeline`` building its own ``KModel(repo_id=...)``.

Runs in a fresh interpreter (kokoro must not be imported yet).  ``KPipeline`` builds its model
with ``hf_hub_download``; the test gives it a Hugging Face cache holding the random-weight
config and an empty state dict, and sets ``HF_HUB_OFFLINE=1``: no network, no stub of any
library.  The grapheme-to-phoneme step uses misaki's espeak back end (``lang_code="e"``), which
works offline (English G2P needs a spaCy model download).

What this exercises: ``apply()`` before ``import kokoro`` leaves the patch pending, the import
applies it; ``KPipeline(lang_code="e", repo_id=...)`` constructs ``KModel`` itself; the text ->
phonemes -> audio path of ``KPipeline.__call__`` runs under emulation and matches the same
pipeline's output computed outside emulation (the CPU reference: unaffected tensors take
kokoro's own code).  Not exercised: downloading real weights and voices, English G2P.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.targets, pytest.mark.slow]

REPO = "hexgrad/Kokoro-82M"
REVISION = "0" * 40

CHILD = textwrap.dedent(
    """
    import json, sys
    import blackwell_compat as bc

    out = {"before_import": "kokoro" in sys.modules}
    report = bc.apply(only=["kokoro"], force=True, strategies={"kokoro": sys.argv[1]})
    out["state_before_import"] = report.entries[0].state

    import torch
    from kokoro import KPipeline
    from kokoro.istftnet import TorchSTFT
    from kokoro.custom_stft import CustomSTFT

    out["state_after_import"] = [s.state for s in bc.status() if s.name == "kokoro"][0]
    out["transform_patched"] = "blackwell-compat" in (TorchSTFT.transform.__doc__ or "")

    torch.manual_seed(0)
    pipeline = KPipeline(lang_code="e", repo_id=sys.argv[2], device="cpu")
    out["stft_type"] = type(pipeline.model.decoder.generator.stft).__name__
    voice = torch.randn(510, 1, 256, generator=torch.Generator().manual_seed(1))

    def speak():
        torch.manual_seed(0)
        (result,) = list(pipeline("hola mundo", voice=voice))
        return result.phonemes, result.output.audio

    phonemes, reference = speak()
    with bc.emulate():
        _, patched = speak()
    bc.revert()
    failed = ""
    with bc.emulate():
        try:
            speak()
        except RuntimeError as exc:
            failed = str(exc)
    out.update(
        phonemes=phonemes,
        samples=reference.numel(),
        max_abs_diff=float((patched - reference).abs().max()),
        close=bool(torch.allclose(patched, reference, rtol=1.3e-6, atol=1e-5)),
        unpatched_nvrtc_error="invalid value for --gpu-architecture" in failed,
        unpatched_error=failed[-300:],
    )
    print(json.dumps(out))
    """
)


def _hf_cache(root: Path) -> Path:
    """A Hugging Face hub cache holding the random-weight Kokoro config and empty weights."""
    import torch
    from golden.cases_kokoro import CONFIG_OVERRIDES
    from support.models import kokoro_config

    repo = root / ("models--" + REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    config = kokoro_config(**CONFIG_OVERRIDES)
    (snapshot / "config.json").write_text(json.dumps(config, ensure_ascii=False))
    torch.save({}, snapshot / "kokoro-v1_0.pth")
    return root


def _run_child(tmp_path: Path, strategy: str) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(HF_HUB_CACHE=str(_hf_cache(tmp_path / "hub")), HF_HUB_OFFLINE="1")
    for name in ("BLACKWELL_COMPAT_EMULATE", "BLACKWELL_COMPAT_AUTO", "BLACKWELL_COMPAT_DISABLE"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, strategy, REPO],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def test_lazy_apply_then_kpipeline_builds_and_speaks(tmp_path: Path) -> None:
    data = _run_child(tmp_path, "exact")
    assert data["before_import"] is False
    assert data["state_before_import"] == "pending-import"
    assert data["state_after_import"] == "applied"
    assert data["transform_patched"] is True
    assert data["stft_type"] == "TorchSTFT"
    assert data["phonemes"] and data["samples"] > 0
    # exact: float32 assert_close defaults against the same pipeline outside emulation.
    assert data["close"], data["max_abs_diff"]
    assert data["unpatched_nvrtc_error"], data["unpatched_error"]


def test_kpipeline_with_disable_complex_gets_custom_stft(tmp_path: Path) -> None:
    data = _run_child(tmp_path, "disable_complex")
    assert data["state_after_import"] == "applied"
    # The pipeline's own KModel was built while the patch was active: CustomSTFT everywhere,
    # so the emulated run equals the CPU run exactly.
    assert data["stft_type"] == "CustomSTFT"
    assert data["max_abs_diff"] == 0.0
    # Reverting does not rebuild the model: it keeps CustomSTFT and still runs.
    assert data["unpatched_error"] == ""
