"""The ``chatterbox`` patch on a real CUDA device (skipped cleanly without one).

With the patch forced (every CUDA device treated as affected), ``S3Tokenizer`` (log-mel and
tokens), CAMPPlus (fbank features and embedding) and the perth watermarker built with
``device="cuda"`` run on the GPU, match the CPU reference, and compile no Jiterator kernel: the
child's kernel cache folder stays empty.  The unpatched control run on the same GPU fills it
(on a GPU the NVRTC knows), which shows the check would catch a Jiterator use; on a really
affected GPU the control fails with the NVRTC error instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.audio_parity import cuda_available, empty_kernel_cache_env

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.targets,
    pytest.mark.slow,
    pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device"),
]

CHILD = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import blackwell_compat as bc
    from golden.cases_chatterbox import PERTH_RATE, S3_RATE, _utterances
    from golden.signals import speechlike
    from support.models import build_campplus, build_perth_watermarker, build_s3tokenizer

    cache = os.environ["PYTORCH_KERNEL_CACHE_PATH"]
    wave = speechlike(2 * S3_RATE)
    marked_in = speechlike(PERTH_RATE // 2, sample_rate=PERTH_RATE)[0].numpy()

    def run(tokenizer, campplus, watermarker, device):
        with torch.no_grad():
            mel = tokenizer.log_mel_spectrogram(wave.to(device))
            codes, _ = tokenizer([wave[0].to(device)])
            embedding = campplus.inference([u.to(device) for u in _utterances()])
        marked = watermarker.apply_watermark(marked_in, sample_rate=PERTH_RATE)
        return mel.cpu(), codes.cpu(), embedding.cpu(), torch.from_numpy(marked)

    cpu = run(build_s3tokenizer(), build_campplus(), build_perth_watermarker("cpu"), "cpu")
    models = (
        build_s3tokenizer().cuda(), build_campplus().cuda(), build_perth_watermarker("cuda")
    )
    with bc.patched(only=["chatterbox"], force=True) as report:
        assert report.applied == ["chatterbox"], str(report)
        gpu = run(*models, "cuda")
    torch.cuda.synchronize()
    out = {"cache": sorted(os.listdir(cache)), "control_error": ""}
    try:
        run(*models, "cuda")  # control: unpatched on the GPU
        torch.cuda.synchronize()
    except RuntimeError as exc:  # a really affected GPU
        out["control_error"] = str(exc)
    out["control_cache"] = sorted(os.listdir(cache))
    mel, codes, embedding, marked = (a.double() for a in gpu)
    mel_c, codes_c, embedding_c, marked_c = (a.double() for a in cpu)
    out.update(
        mel_max_abs=float((mel - mel_c).abs().max()),
        codes_equal_fraction=float((codes == codes_c).double().mean()),
        embedding_rel_l2=float((embedding - embedding_c).norm() / embedding_c.norm()),
        marked_max_abs=float((marked - marked_c).abs().max()),
    )
    print(json.dumps(out))
    """
)


def test_cuda_matches_cpu_and_compiles_no_jiterator_kernel(tmp_path: Path) -> None:
    cache = tmp_path / "kernels"
    cache.mkdir()
    tests_dir = str(Path(__file__).resolve().parent)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, tests_dir],
        capture_output=True, text=True, timeout=900, env=empty_kernel_cache_env(str(cache)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["cache"] == []
    if data["control_error"]:  # an affected GPU: the unpatched control fails as it should
        assert "invalid value for --gpu-architecture" in data["control_error"]
    else:  # the unpatched control compiled Jiterator kernels: the check can see them
        assert data["control_cache"], "the unpatched control compiled nothing: the check is blind"
    # cuFFT against the CPU FFT, then log10: float rounding only.
    assert data["mel_max_abs"] <= 1e-4
    # Random-weight codes can sit on the FSQ quantizer's rounding boundaries: nearly all agree.
    assert data["codes_equal_fraction"] >= 0.9
    # cuDNN convolutions in a random-weight CAMPPlus (TF32 off): rounding through the network.
    assert data["embedding_rel_l2"] <= 1e-3
    assert data["marked_max_abs"] <= 1e-3
